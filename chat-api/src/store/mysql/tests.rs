//! Tests of the MySQL store against the real server: the conformance suite,
//! and a hung or stopped server seen through a TCP proxy.

use std::time::{Duration, Instant};

use chatty_shared::RoomKey;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use super::MysqlStore;
use crate::store::{conformance, Store, StoreError};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SERVER: &str = "mysql://root@127.0.0.1:3306";
const HOW_TO_START: &str =
    "start MariaDB: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd";

/// A fresh database on the real server, dropped by [`TestDb::drop_db`].
struct TestDb {
    name: String,
}

impl TestDb {
    async fn new() -> TestDb {
        let name = format!("chatty_t_{:016x}", rand::random::<u64>());
        if let Err(e) = Conn::new(Opts::from_url(SERVER).unwrap()).await {
            panic!("MariaDB at {SERVER} is unreachable ({e}); {HOW_TO_START}");
        }
        TestDb { name }
    }

    fn url(&self) -> String {
        format!("{SERVER}/{}", self.name)
    }

    fn url_via(&self, addr: std::net::SocketAddr) -> String {
        format!("mysql://root@{addr}/{}?prefer_socket=false", self.name)
    }

    async fn drop_db(self) {
        let mut conn = Conn::new(Opts::from_url(SERVER).unwrap()).await.unwrap();
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    let db = TestDb::new().await;
    // Generous: the suite runs beside other builds on a small machine.
    let store = MysqlStore::connect(&db.url(), Duration::from_secs(10))
        .await
        .expect("connect");
    conformance::run_all(store.clone()).await;
    // Migrations are idempotent.
    let again = MysqlStore::connect(&db.url(), Duration::from_secs(10))
        .await
        .expect("reconnect");
    assert_eq!(
        again.list_sites().await.unwrap().len(),
        store.list_sites().await.unwrap().len()
    );
    again.disconnect().await;
    store.disconnect().await;
    db.drop_db().await;
}

#[tokio::test]
async fn unreachable_server_fails_fast() {
    let t = Instant::now();
    let r = MysqlStore::connect(
        "mysql://root@127.0.0.1:1/chatty_nowhere?prefer_socket=false",
        Duration::from_millis(600),
    )
    .await;
    assert!(matches!(
        r,
        Err(StoreError::Connection(_) | StoreError::Timeout(_))
    ));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    /// Connections stay open and nothing moves: a hung server.
    Frozen,
    /// Connections are closed and new ones refused: a stopped server.
    Down,
}

/// A TCP proxy to the real server that can hang or drop connections.
async fn proxy(mode: watch::Receiver<Mode>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let mut mode = mode.clone();
            tokio::spawn(async move {
                let mut client = client;
                let current = *mode.borrow_and_update();
                match current {
                    Mode::Down => {
                        let _ = client.shutdown().await;
                    }
                    Mode::Frozen => {
                        let _ = mode.changed().await;
                    }
                    Mode::Up => {
                        let Ok(mut server) = TcpStream::connect("127.0.0.1:3306").await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                            _ = mode.changed() => {}
                        }
                        // Forwarding stopped. Frozen: hold both sockets
                        // until the mode changes again; Down: drop them.
                        while *mode.borrow_and_update() == Mode::Frozen {
                            if mode.changed().await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_or_stopped_server_is_unavailable_quickly_and_recovers() {
    let db = TestDb::new().await;
    let (set_mode, mode) = watch::channel(Mode::Up);
    let addr = proxy(mode).await;
    let store = MysqlStore::connect(&db.url_via(addr), Duration::from_millis(600))
        .await
        .expect("connect through the proxy");
    let key = RoomKey::new("demo", "lobby").unwrap();
    store
        .append_message(&key, conformance::message("m1", "c1", "before"))
        .await
        .unwrap();

    for broken in [Mode::Frozen, Mode::Down] {
        set_mode.send(broken).unwrap();
        for i in 0..3 {
            let t = Instant::now();
            let r = store
                .append_message(&key, conformance::message("m1", &format!("x{i}"), "during"))
                .await;
            assert!(
                matches!(r, Err(StoreError::Connection(_) | StoreError::Timeout(_))),
                "{broken:?}: {r:?}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{broken:?} append took {:?}",
                t.elapsed()
            );
            let t = Instant::now();
            let r = store.room_version(&key).await;
            assert!(
                matches!(r, Err(StoreError::Connection(_) | StoreError::Timeout(_))),
                "{broken:?}: {r:?}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{broken:?} read took {:?}",
                t.elapsed()
            );
            let t = Instant::now();
            assert!(store.ping().await.is_err());
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{broken:?} ping took {:?}",
                t.elapsed()
            );
        }
        set_mode.send(Mode::Up).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store
                .append_message(
                    &key,
                    conformance::message("m1", &format!("after-{broken:?}"), "after"),
                )
                .await
            {
                Ok(a) => {
                    assert!(a.created);
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "did not recover: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        store.ping().await.unwrap();
    }
    let (events, version) = store.events_after(&key, 0, 100).await.unwrap();
    assert_eq!(events.len() as u64, version.seq);
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    store.disconnect().await;
    db.drop_db().await;
}
