//! Vulnerability matching for the Console: the OSV record format ([`osv`]), version ordering per
//! ecosystem ([`version`]), OSV `affected` evaluation ([`matching`]), the mapping from what a
//! Defender inventories to OSV ecosystems ([`ecosystem`]) and CVSS base scores ([`severity`]).
//!
//! Pure logic, no I/O: the Console stores records and inventories and calls this crate; the
//! benchmark and the tests drive it directly. OSV schema: <https://ossf.github.io/osv-schema/>.

pub mod ecosystem;
pub mod matching;
pub mod osv;
pub mod severity;
pub mod version;

pub use ecosystem::{Ecosystem, PackageKey};
pub use matching::{Finding, Index, affected_by};
pub use osv::Record;
pub use severity::{Rating, SeverityInfo};
