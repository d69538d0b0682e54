//! The task-local protocol between app-container wrappers and the sidecar: length-prefixed
//! protobuf frames over a Unix socket in the shared volume. Frames are bounded both ways.

use defender_proto::MAX_LOCAL_FRAME_BYTES;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Default socket path inside the shared `/var/lib/defender` volume.
pub const DEFAULT_SOCKET: &str = "/var/lib/defender/run/defender.sock";

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit of {MAX_LOCAL_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Writes one message as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin, M: Message>(
    w: &mut W,
    msg: &M,
) -> Result<(), FrameError> {
    let body = msg.encode_to_vec();
    if body.len() > MAX_LOCAL_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin, M: Message + Default>(
    r: &mut R,
) -> Result<Option<M>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_LOCAL_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(M::decode(body.as_slice())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_proto::v1::{LocalHello, LocalRequest, local_request};

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let msg = LocalRequest {
            msg: Some(local_request::Msg::Hello(LocalHello {
                container: "app".into(),
                image: "nginx".into(),
                app_pid: 7,
            })),
        };
        write_frame(&mut a, &msg).await.unwrap();
        drop(a);
        let got: LocalRequest = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got, msg);
        assert!(
            read_frame::<_, LocalRequest>(&mut b)
                .await
                .unwrap()
                .is_none()
        );

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(u32::MAX).to_le_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<_, LocalRequest>(&mut b).await,
            Err(FrameError::TooLarge(_))
        ));
    }
}
