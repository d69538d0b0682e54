//! Compiles the protocol with protox (pure Rust), so a fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=defender/v1");
    let fds = protox::compile(["defender/v1/defender.proto"], ["."])?;
    // No transport constructors: they would clash with the `Connect` RPC; clients use `new(channel)`.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
