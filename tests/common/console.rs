//! A VMI's serial console through the API's console subresource (a WebSocket whose binary
//! frames carry the raw bytes both ways), read until the guest has printed what a test
//! waits for.
//!
//! ```ignore
//! let text = common::console::read_until(addr, "myvm", "tick=1").await;
//! let report = common::guest::Report::parse(&text);
//! ```

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The console subresource's collection.
pub const SUB_VMIS: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances";

/// How long a read waits for more output before it fails: a hang guard, not a speed
/// check (guests run under PVM here).
const DEADLINE: Duration = Duration::from_secs(120);

/// An open console of one VMI.
pub struct Console {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Everything read so far.
    pub text: String,
}

impl Console {
    /// Connects to the console of VMI `vmi` in namespace `default`.
    pub async fn open(addr: SocketAddr, vmi: &str) -> Self {
        let url = format!("ws://{addr}{SUB_VMIS}/{vmi}/console");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("console WebSocket");
        Self {
            ws,
            text: String::new(),
        }
    }

    /// Reads until `needle` has shown up; returns everything read.
    pub async fn until(&mut self, needle: &str) -> &str {
        while !self.text.contains(needle) {
            self.until_more(self.text.len(), needle).await;
        }
        &self.text
    }

    /// Reads until the guest's `key=value` line is complete; returns everything read.
    pub async fn until_line(&mut self, key: &str) -> &str {
        let start = format!("{key}=");
        while !self
            .text
            .find(&start)
            .is_some_and(|at| self.text[at..].contains('\n'))
        {
            self.until_more(self.text.len(), &start).await;
        }
        &self.text
    }

    /// Reads until the text grows past `len` bytes (waiting for `what`).
    async fn until_more(&mut self, len: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.text.len() <= len {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {what:?} on the console; got {}", self.text));
            match msg {
                Some(Ok(Message::Binary(b))) => self.text.push_str(&String::from_utf8_lossy(&b)),
                Some(Ok(Message::Text(t))) => self.text.push_str(t.as_str()),
                Some(Ok(_)) => {}
                other => panic!(
                    "console ended ({other:?}) before {what:?}; got {}",
                    self.text
                ),
            }
        }
    }

    /// Types `bytes` into the console.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("console input");
    }

    /// Closes the WebSocket; returns everything read.
    pub async fn close(mut self) -> String {
        let _ = self.ws.close(None).await;
        self.text
    }
}

/// Reads VMI `vmi`'s console until `needle` shows up; returns everything read.
pub async fn read_until(addr: SocketAddr, vmi: &str, needle: &str) -> String {
    let mut console = Console::open(addr, vmi).await;
    console.until(needle).await;
    console.close().await
}
