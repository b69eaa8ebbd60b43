//! The console bridge: the client's WebSocket (from the upgrade of the console
//! subresource) joined to the node agent's console WebSocket. Binary and text frames pass
//! both ways unchanged. A Close from the client is forwarded, and what the node still
//! sends before its own Close reaches the client; a Close (or end) from the node ends the
//! client's socket with the same code and reason. Server shutdown closes both.

use crate::client::http::WebSocket as NodeSocket;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as NodeCloseFrame;
use tokio_tungstenite::tungstenite::Message as NodeMessage;
use tokio_util::sync::CancellationToken;

/// What the client sends, as a frame to the node; `None` for frames that are not relayed
/// (pings are answered by each side's WebSocket itself).
fn to_node(m: Message) -> Option<NodeMessage> {
    match m {
        Message::Binary(b) => Some(NodeMessage::Binary(b)),
        Message::Text(t) => Some(NodeMessage::Text(t.as_str().into())),
        Message::Close(f) => Some(NodeMessage::Close(f.map(|f| NodeCloseFrame {
            code: CloseCode::from(f.code),
            reason: f.reason.as_str().into(),
        }))),
        Message::Ping(_) | Message::Pong(_) => None,
    }
}

/// What the node sends, as a frame to the client.
fn to_client(m: NodeMessage) -> Option<Message> {
    match m {
        NodeMessage::Binary(b) => Some(Message::Binary(b)),
        NodeMessage::Text(t) => Some(Message::Text(t.as_str().into())),
        NodeMessage::Close(f) => Some(Message::Close(f.map(|f| CloseFrame {
            code: u16::from(f.code),
            reason: f.reason.as_str().into(),
        }))),
        NodeMessage::Ping(_) | NodeMessage::Pong(_) | NodeMessage::Frame(_) => None,
    }
}

/// Relays frames between `client` and `node` until either side ends or `shutdown`.
pub async fn bridge(client: WebSocket, node: NodeSocket, shutdown: CancellationToken) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut node_tx, mut node_rx) = node.split();
    // After the client's Close: only the node's remaining output and its Close.
    let mut client_done = false;
    loop {
        tokio::select! {
            m = client_rx.next(), if !client_done => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, Message::Close(_));
                    if let Some(out) = to_node(m) {
                        if node_tx.send(out).await.is_err() {
                            break;
                        }
                    }
                    client_done = closing;
                }
                Some(Err(e)) => {
                    tracing::debug!("console client socket failed: {e}");
                    let _ = node_tx.send(NodeMessage::Close(None)).await;
                    break;
                }
                None => {
                    let _ = node_tx.send(NodeMessage::Close(None)).await;
                    break;
                }
            },
            m = node_rx.next() => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, NodeMessage::Close(_));
                    if let Some(out) = to_client(m) {
                        if client_tx.send(out).await.is_err() {
                            break;
                        }
                    }
                    if closing {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("console node socket failed: {e}");
                    let _ = client_tx
                        .send(Message::Close(Some(CloseFrame {
                            code: 1011,
                            reason: "the node's console connection failed".into(),
                        })))
                        .await;
                    break;
                }
                None => {
                    let _ = client_tx.send(Message::Close(None)).await;
                    break;
                }
            },
            () = shutdown.cancelled() => {
                let going_away = |reason: &str| CloseFrame { code: 1001, reason: reason.into() };
                let _ = client_tx.send(Message::Close(Some(going_away("the API server is shutting down")))).await;
                let _ = node_tx.send(NodeMessage::Close(None)).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_map_both_ways() {
        let b = bytes::Bytes::from_static(b"\x00\xffabc");
        assert_eq!(
            to_node(Message::Binary(b.clone())),
            Some(NodeMessage::Binary(b.clone()))
        );
        assert_eq!(
            to_client(NodeMessage::Binary(b.clone())),
            Some(Message::Binary(b))
        );
        assert_eq!(to_node(Message::Ping(bytes::Bytes::new())), None);
        let closed = to_client(NodeMessage::Close(Some(NodeCloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })));
        assert_eq!(
            closed,
            Some(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "bye".into()
            })))
        );
    }
}
