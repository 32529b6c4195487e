//! `tollgate connect`: a local PostgreSQL port that needs no password. Each client there is
//! forwarded to the gateway's PostgreSQL listener; the CLI answers the password challenge with
//! its own key or login token (taken afresh for each client, so a login refreshed meanwhile is
//! used), so it never has to be typed into psql or a connection string.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_pg::codec;
use tollgate_pg::stream::read_message;

use crate::client::Api;

pub async fn run(api: &Api, connection: &str, port: u16) -> Result<ExitCode> {
    let me = api.get("/api/whoami").await?;
    let info = api.get("/api/info").await?;
    let pg: SocketAddr = info["listeners"]["postgres"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .context("the gateway did not report its PostgreSQL address")?;
    if !pg.ip().is_loopback() {
        bail!(
            "the gateway's PostgreSQL listener {pg} is not on this machine; connect with psql and sslmode=require instead"
        );
    }
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let local = listener.local_addr()?;
    println!(
        "forwarding 127.0.0.1:{} to connection \"{connection}\" as {}",
        local.port(),
        me["subject"].as_str().unwrap_or("?")
    );
    println!(
        "  psql \"host=127.0.0.1 port={} dbname={connection}\"",
        local.port()
    );
    println!("press Ctrl-C to stop");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        continue;
                    }
                };
                let api = api.clone();
                let connection = connection.to_string();
                tokio::spawn(async move {
                    if let Err(e) = forward(client, pg, &connection, &api).await {
                        eprintln!("session ended with an error: {e:#}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn forward(
    mut client: TcpStream,
    gateway: SocketAddr,
    connection: &str,
    api: &Api,
) -> Result<()> {
    let _ = client.set_nodelay(true);
    // The client's startup: decline TLS and GSS (the hop is local), pass cancels through.
    let params = loop {
        let len = client.read_i32().await?;
        if !(8..=codec::MAX_STARTUP_BYTES as i32).contains(&len) {
            bail!("client sent an invalid startup packet");
        }
        let mut body = vec![0u8; len as usize - 4];
        client.read_exact(&mut body).await?;
        let code = codec::read_i32(&body, 0)?;
        match code {
            codec::SSL_REQUEST | codec::GSSENC_REQUEST => client.write_all(b"N").await?,
            codec::CANCEL_REQUEST => {
                let mut up = TcpStream::connect(gateway).await?;
                up.write_all(&len.to_be_bytes()).await?;
                up.write_all(&body).await?;
                let mut sink = [0u8; 1];
                let _ = up.read(&mut sink).await;
                return Ok(());
            }
            _ => break codec::parse_startup(body.get(4..).unwrap_or_default())?,
        }
    };
    let token = match api.token().await {
        Ok(t) => t,
        Err(e) => {
            let mut out = BytesMut::new();
            codec::error_response(&mut out, "FATAL", "28000", &format!("{e:#}"));
            client.write_all(&out).await?;
            return Err(e);
        }
    };
    let mut up = TcpStream::connect(gateway)
        .await
        .with_context(|| format!("cannot reach the gateway at {gateway}"))?;
    let _ = up.set_nodelay(true);
    let mut startup: Vec<(&str, &str)> = params
        .params
        .iter()
        .filter(|(k, _)| k != "database")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    startup.push(("database", connection));
    if params.get("user").is_none() {
        startup.push(("user", "tollgate"));
    }
    let mut out = BytesMut::new();
    codec::startup_message(&mut out, &startup);
    up.write_all(&out).await?;
    let mut buf = BytesMut::new();
    match read_message(&mut up, &mut buf, codec::MAX_STARTUP_BYTES).await? {
        Some((b'R', body)) if codec::read_i32(&body, 0)? == 3 => {
            out.clear();
            codec::put_message(&mut out, b'p', |b| codec::put_cstr(b, &token));
            up.write_all(&out).await?;
        }
        Some((tag, body)) => {
            // Anything else (an error, most likely) goes to the client as is.
            out.clear();
            codec::put_message(&mut out, tag, |b| b.extend_from_slice(&body));
            client.write_all(&out).await?;
        }
        None => bail!("the gateway closed the connection"),
    }
    if !buf.is_empty() {
        client.write_all(&buf).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut up).await?;
    Ok(())
}
