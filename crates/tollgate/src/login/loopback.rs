//! The loopback redirect of a code login (RFC 8252): a tiny HTTP server on 127.0.0.1 that
//! takes the browser's `GET /callback?code=…&state=…`, answers it with a short page and hands
//! the code over. Anything else it is sent gets a 404 and the wait goes on.

use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use url::Url;

/// The most a browser's request head may take.
const MAX_HEAD: usize = 16 * 1024;

/// What one request to the listener amounts to.
#[derive(Debug, PartialEq)]
pub enum Callback {
    /// Not the callback (a favicon, a probe): answered 404, ignored.
    Other,
    /// The provider's code, with the state checked.
    Code(String),
    /// The login cannot go on: the provider's error, a wrong state or issuer.
    Fail(String),
}

/// Serves the listener until the callback comes; the authorization code.
pub async fn wait_for_code(listener: TcpListener, state: &str, issuer: &str) -> Result<String> {
    let (tx, mut rx) = mpsc::channel::<Callback>(4);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (tx, state, issuer) = (tx.clone(), state.to_string(), issuer.to_string());
                tokio::spawn(async move {
                    if let Some(outcome) = serve(stream, &state, &issuer).await {
                        let _ = tx.send(outcome).await;
                    }
                });
            }
            Some(outcome) = rx.recv() => match outcome {
                Callback::Code(code) => return Ok(code),
                Callback::Fail(why) => return Err(anyhow!(why)),
                Callback::Other => {}
            }
        }
    }
}

/// Reads one request, answers it, and says what it was (`None`: not a request at all).
async fn serve(mut stream: TcpStream, state: &str, issuer: &str) -> Option<Callback> {
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .ok()??;
    let outcome = judge(&head, state, issuer);
    let (status, title, text) = match &outcome {
        Callback::Code(_) => (
            "200 OK",
            "Tollgate login",
            "The identity provider sent the login back to tollgate. You can close this tab; the terminal shows the result.".to_string(),
        ),
        Callback::Fail(why) => ("400 Bad Request", "Tollgate login failed", why.clone()),
        Callback::Other => ("404 Not Found", "Not found", "Nothing here.".to_string()),
    };
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{}</p>\n</body></html>\n",
        html_escape(&text)
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    Some(outcome)
}

/// The request head (up to the blank line), or `None` when the peer sends none.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

/// What a request head means for the login.
pub fn judge(head: &str, state: &str, issuer: &str) -> Callback {
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Callback::Other;
    };
    let Ok(url) = Url::parse("http://127.0.0.1").and_then(|base| base.join(target)) else {
        return Callback::Other;
    };
    if method != "GET" || url.path() != "/callback" {
        return Callback::Other;
    }
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    // The state first: a request that did not come from this login's redirect says nothing,
    // not even an error, that the login should believe.
    if param("state").as_deref() != Some(state) {
        return Callback::Fail(
            "refused the login callback: its state does not match the one this login sent (a stale browser tab, or a request forged by another page); nothing was exchanged. Run `tollgate login` again.".into(),
        );
    }
    if let Some(iss) = param("iss")
        && iss.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        return Callback::Fail(format!(
            "refused the login callback: it names the issuer {iss}, not {issuer}; nothing was exchanged"
        ));
    }
    if let Some(error) = param("error") {
        let description = param("error_description")
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Callback::Fail(format!(
            "the identity provider refused the login ({error}{description})"
        ));
    }
    match param("code").filter(|c| !c.is_empty()) {
        Some(code) => Callback::Code(code),
        None => Callback::Fail("the login callback carries no authorization code".into()),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://idp.example";

    fn get(target: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    }

    #[test]
    fn the_callback_gives_the_code_only_with_the_right_state_and_issuer() {
        assert_eq!(
            judge(
                &get("/callback?code=c1&state=s1&iss=https%3A%2F%2Fidp.example"),
                "s1",
                ISS
            ),
            Callback::Code("c1".into())
        );
        assert_eq!(
            judge(&get("/callback?code=c1&state=s1"), "s1", ISS),
            Callback::Code("c1".into())
        );
        for target in [
            "/callback?code=c1&state=s2",
            "/callback?code=c1",
            "/callback?code=c1&state=s1&iss=https%3A%2F%2Fevil.example",
            "/callback?state=s1",
            "/callback?state=s1&error=access_denied&error_description=no",
        ] {
            assert!(
                matches!(judge(&get(target), "s1", ISS), Callback::Fail(_)),
                "{target}"
            );
        }
        let Callback::Fail(why) = judge(&get("/callback?code=c&state=bad"), "s1", ISS) else {
            panic!("accepted");
        };
        assert!(why.contains("state"), "{why}");
        let Callback::Fail(why) = judge(&get("/callback?state=s1&error=access_denied"), "s1", ISS)
        else {
            panic!("accepted");
        };
        assert!(why.contains("access_denied"), "{why}");
    }

    #[test]
    fn other_requests_are_ignored() {
        assert_eq!(judge(&get("/favicon.ico"), "s1", ISS), Callback::Other);
        assert_eq!(
            judge("POST /callback?code=c&state=s1 HTTP/1.1\r\n\r\n", "s1", ISS),
            Callback::Other
        );
        assert_eq!(judge("garbage", "s1", ISS), Callback::Other);
        assert_eq!(judge("", "s1", ISS), Callback::Other);
    }

    #[tokio::test]
    async fn the_listener_answers_the_browser_and_ignores_strays() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting = tokio::spawn(async move { wait_for_code(listener, "s1", ISS).await });
        let send = |target: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(get(target).as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        // An idle connection does not hold up the others.
        let _idle = TcpStream::connect(addr).await.unwrap();
        assert!(send("/favicon.ico").await.starts_with("HTTP/1.1 404"));
        let page = send("/callback?code=abc&state=s1").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("close this tab"), "{page}");
        assert_eq!(waiting.await.unwrap().unwrap(), "abc");
    }
}
