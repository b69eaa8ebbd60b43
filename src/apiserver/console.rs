//! The console bridge: the client's WebSocket (from the upgrade of the console
//! subresource) joined to the node agent's console WebSocket. Binary and text frames pass
//! both ways unchanged. A Close from either side is forwarded with its code and reason and
//! ends the bridge (a WebSocket peer answers a Close at once, so nothing is relayed after
//! it); a failed node connection closes the client with 1011. Server shutdown closes both
//! with 1001.

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

/// How long the node gets to answer a Close the client started, before its socket is
/// dropped anyway (cleanup of a misbehaving peer, not a protocol timing).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Relays frames between `client` and `node` until either side ends or `shutdown`.
pub async fn bridge(client: WebSocket, node: NodeSocket, shutdown: CancellationToken) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut node_tx, mut node_rx) = node.split();
    loop {
        tokio::select! {
            m = client_rx.next() => match m {
                Some(Ok(Message::Close(f))) => {
                    // Forward the Close, send the client its reply, let the node answer.
                    let _ = node_tx.send(to_node(Message::Close(f)).expect("a Close maps")).await;
                    let _ = client_tx.close().await;
                    let drain = async {
                        while let Some(Ok(m)) = node_rx.next().await {
                            if matches!(m, NodeMessage::Close(_)) {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
                    break;
                }
                Some(Ok(m)) => {
                    if let Some(out) = to_node(m) {
                        if node_tx.send(out).await.is_err() {
                            let _ = client_tx.send(Message::Close(Some(CloseFrame {
                                code: 1011,
                                reason: "the node's console connection failed".into(),
                            }))).await;
                            break;
                        }
                    }
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
                Some(Ok(NodeMessage::Close(f))) => {
                    let _ = client_tx.send(to_client(NodeMessage::Close(f)).expect("a Close maps")).await;
                    // Sends the node its Close reply.
                    let _ = node_tx.close().await;
                    break;
                }
                Some(Ok(m)) => {
                    if let Some(out) = to_client(m) {
                        if client_tx.send(out).await.is_err() {
                            let _ = node_tx.send(NodeMessage::Close(None)).await;
                            break;
                        }
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
                let _ = client_tx.send(Message::Close(Some(CloseFrame {
                    code: 1001,
                    reason: "the API server is shutting down".into(),
                }))).await;
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
