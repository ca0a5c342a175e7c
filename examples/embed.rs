//! Embedding: a server and a client in one process, through the public API only.
//!
//! The client exposes a small local TCP service; the server publishes it on a port; we then
//! connect to that port like any user would, and shut both down.
//!
//! Run with `cargo run --example embed`.

use std::error::Error;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::{ClientConfig, ProxyConfig};
use tunnel_server::ServerConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // A local service: greets and closes.
    let service = TcpListener::bind("127.0.0.1:0").await?;
    let service_addr = service.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = service.accept().await {
            let _ = s.write_all(b"hello from behind the NAT\n").await;
        }
    });

    // The server: port 0 lets the OS pick; a self-signed certificate is generated.
    let server = tunnel_server::start(
        ServerConfig::default()
            .with_bind("127.0.0.1:0".parse()?)
            .with_publish_addr("127.0.0.1".parse()?)
            .with_auth_key("an example key, use a long random one"),
    )
    .await?;

    // A port for the published proxy (free a moment ago).
    let publish_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();

    // The client pins the server's certificate by fingerprint.
    let mut client = tunnel_client::start(
        ClientConfig::new(server.local_addr().to_string())
            .with_auth_key("an example key, use a long random one")
            .with_fingerprint(server.fingerprint())
            .with_id("embedded")
            .with_proxy(ProxyConfig::tcp(
                "greeter",
                &service_addr.to_string(),
                Some(publish_port),
            )),
    )
    .await?;
    for verdict in client.ready().await?.results {
        println!("{} registered: {}", verdict.name, verdict.error.is_none());
    }

    // A user of the published port.
    let mut user = TcpStream::connect(("127.0.0.1", publish_port)).await?;
    let mut greeting = String::new();
    user.read_to_string(&mut greeting).await?;
    print!("user received: {greeting}");

    client.shutdown();
    client.join().await?;
    server.shutdown();
    server.join().await;
    Ok(())
}
