//! A TCP fault proxy between a process and a server: passes bytes, cuts every
//! connection (and refuses new ones), or hangs (accepts, answers nothing).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    /// Close every connection and refuse new ones.
    Cut = 1,
    /// Accept connections but forward nothing in either direction.
    Hang = 2,
}

/// A running fault proxy; stops when dropped.
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    changed: watch::Sender<u8>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port and forwards to `127.0.0.1:target`.
    pub async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let (changed, rx) = watch::channel(Mode::Pass as u8);
        let m = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mode = m.load(Ordering::SeqCst);
                if mode == Mode::Cut as u8 {
                    drop(client);
                    continue;
                }
                tokio::spawn(serve(client, target, mode, rx.clone()));
            }
        });
        FaultProxy {
            port,
            mode,
            changed,
            task,
        }
    }

    /// Switches the mode; returns once the connection tasks have had time
    /// to act on it (they are woken at once and need only a moment).
    pub async fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        let _ = self.changed.send(mode as u8);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.changed.send(Mode::Cut as u8);
    }
}

async fn serve(mut client: TcpStream, target: u16, mode: u8, mut changed: watch::Receiver<u8>) {
    if mode == Mode::Hang as u8 {
        hold_silent(&mut changed).await;
        return;
    }
    let Ok(Ok(mut server)) = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", target)),
    )
    .await
    else {
        return;
    };
    let hang = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                _ = &mut copy => return,
                c = changed.changed() => {
                    if c.is_err() { return; }
                    let now = *changed.borrow();
                    if now == Mode::Cut as u8 { return; }
                    if now == Mode::Hang as u8 { break true; }
                }
            }
        }
    };
    if hang {
        // Both sockets stay open and silent until the mode changes again.
        hold_silent(&mut changed).await;
    }
}

async fn hold_silent(changed: &mut watch::Receiver<u8>) {
    loop {
        if changed.changed().await.is_err() || *changed.borrow() != Mode::Hang as u8 {
            return;
        }
    }
}
