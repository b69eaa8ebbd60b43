//! `monovirt console VMI`: the guest's serial console over the console subresource's
//! WebSocket (`GET /apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/console`),
//! binary frames both ways. On a terminal it runs in raw mode and Ctrl-] (as in virtctl)
//! ends the session; from a pipe, end of input closes the WebSocket (output the server
//! sends before its Close reply is still printed).

use super::connection::ConnectionArgs;
use super::lifecycle::subresource_path;
use super::CliError;
use crate::client::ClientError;
use crate::vmm::terminal::{Keys, RawMode};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use tokio_tungstenite::tungstenite::Message;

/// Ctrl-]: the byte that ends an interactive console session.
pub const ESCAPE: u8 = 0x1d;

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// The VirtualMachineInstance.
    pub name: String,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// What the local side read.
enum Input {
    Bytes(Vec<u8>),
    /// Ctrl-] on a terminal.
    Escape,
    Eof,
}

/// Splits `buf` at the escape byte when `interactive`: the bytes before it, and whether it was there.
fn split_escape(buf: &[u8], interactive: bool) -> (&[u8], bool) {
    match buf.iter().position(|b| *b == ESCAPE) {
        Some(i) if interactive => (&buf[..i], true),
        _ => (buf, false),
    }
}

/// Reads stdin on its own thread (a blocking read cannot be cancelled; the thread ends
/// with the process) and hands the bytes to the session.
fn stdin_reader(interactive: bool) -> tokio::sync::mpsc::Receiver<Input> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Input::Eof);
                        return;
                    }
                    Ok(n) => n,
                };
                let (bytes, escaped) = split_escape(&buf[..n], interactive);
                if !bytes.is_empty() && tx.blocking_send(Input::Bytes(bytes.to_vec())).is_err() {
                    return;
                }
                if escaped {
                    let _ = tx.blocking_send(Input::Escape);
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the stdin reader: {e}");
    }
    rx
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    ClientError::WebSocket(Box::new(e))
}

pub async fn run(args: &ConsoleArgs) -> Result<(), CliError> {
    let conn = args.connection.connect()?;
    let path = subresource_path(
        &conn.namespace,
        "virtualmachineinstances",
        &args.name,
        "console",
    );
    let ws = conn
        .client
        .websocket(&path)
        .await
        .map_err(|e| conn.error(e))?;
    let raw = RawMode::enable(libc::STDIN_FILENO, Keys::AllToGuest)?;
    let interactive = raw.is_some();
    let nl = if interactive { "\r\n" } else { "\n" };
    eprint!(
        "Successfully connected to {} console. The escape sequence is ^]{nl}",
        args.name
    );
    let (mut sink, mut stream) = ws.split();
    let mut input = stdin_reader(interactive);
    let mut input_open = true;
    // Whether we sent our Close: the peer may then drop the connection without its reply.
    let mut closing = false;
    let mut out = std::io::stdout();
    let result = loop {
        tokio::select! {
            i = input.recv(), if input_open => match i {
                Some(Input::Bytes(b)) => {
                    if let Err(e) = sink.send(Message::binary(b)).await {
                        break Err(conn.error(ws_error(e)));
                    }
                }
                Some(Input::Escape) => {
                    let _ = sink.send(Message::Close(None)).await;
                    break Ok(());
                }
                Some(Input::Eof) | None => {
                    // End of input ends the session; output until the server's Close reply
                    // is still printed.
                    input_open = false;
                    closing = true;
                    if let Err(e) = sink.send(Message::Close(None)).await {
                        break Err(conn.error(ws_error(e)));
                    }
                }
            },
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    out.write_all(&b)?;
                    out.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    out.write_all(t.as_bytes())?;
                    out.flush()?;
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) if f.code != tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal
                            && !f.reason.is_empty() => Err(CliError::Usage(format!("the console closed: {}", f.reason))),
                        _ => Ok(()),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(_)) if closing => break Ok(()),
                Some(Err(e)) => break Err(conn.error(ws_error(e))),
                None => break Ok(()),
            },
        }
    };
    drop(raw);
    if interactive {
        eprintln!();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_only_on_a_terminal() {
        assert_eq!(split_escape(b"ab\x1dcd", true), (&b"ab"[..], true));
        assert_eq!(split_escape(b"ab\x1dcd", false), (&b"ab\x1dcd"[..], false));
        assert_eq!(split_escape(b"abc", true), (&b"abc"[..], false));
    }
}
