//! One HTTP POST of a delivery: a fresh connection per attempt (HTTP/1.1, TLS for https),
//! the whole attempt (resolving, connecting, TLS, request, answer) bounded by one timeout,
//! so a target that hangs holds a worker for that long at most.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How an attempt is made.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The bound of the whole attempt.
    pub timeout: Duration,
    /// Whether targets may resolve to loopback, private or link-local addresses.
    pub allow_private_targets: bool,
}

/// The target's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The start of the answer's body (at most [`EXCERPT_BYTES`]), as text.
    pub excerpt: String,
}

/// How much of an answer's body is read and kept.
pub const EXCERPT_BYTES: usize = 256;

/// POSTs `body` with `headers` to `url`; an error (no answer) says why.
pub async fn post(
    url: &str,
    headers: &[(&'static str, String)],
    body: String,
    o: &SendOptions,
) -> Result<Answer, String> {
    match tokio::time::timeout(o.timeout, attempt(url, headers, body, o)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", o.timeout.as_millis())),
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn addresses(u: &url::Url, port: u16) -> Result<Vec<SocketAddr>, String> {
    Ok(match u.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Domain(d)) => tokio::net::lookup_host((d, port))
            .await
            .map_err(|e| format!("cannot resolve {d}: {e}"))?
            .collect(),
        None => return Err("the URL names no host".into()),
    })
}

async fn connect(u: &url::Url, o: &SendOptions) -> Result<Box<dyn Io>, String> {
    let port = u
        .port_or_known_default()
        .ok_or_else(|| "the URL has no port".to_owned())?;
    let mut addrs = addresses(u, port).await?;
    if !o.allow_private_targets {
        let before = addrs.len();
        addrs.retain(|a| !crate::rules::is_private(a.ip()));
        if addrs.is_empty() && before > 0 {
            return Err(
                "the target resolves to a loopback, private or link-local address, which webhooks.allow_private_targets does not allow"
                    .into(),
            );
        }
    }
    let mut last = "the host has no address".to_owned();
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    if u.scheme() != "https" {
        return Ok(Box::new(tcp));
    }
    use tokio_rustls::rustls;
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("the URL names no host".into()),
    };
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| format!("TLS: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(tls))
}

async fn attempt(
    url: &str,
    headers: &[(&'static str, String)],
    body: String,
    o: &SendOptions,
) -> Result<Answer, String> {
    let u = url::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
    let io = connect(&u, o).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // The connection is driven by a task of its own, ended with the attempt however it
    // ends (also when the timeout drops this future): a hanging target keeps no socket.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    exchange(&mut sender, &u, headers, body).await
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    u: &url::Url,
    headers: &[(&'static str, String)],
    body: String,
) -> Result<Answer, String> {
    let mut target = u.path().to_owned();
    if let Some(q) = u.query() {
        target.push('?');
        target.push_str(q);
    }
    let host = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return Err("the URL names no host".into()),
    };
    let mut req = http::Request::post(target)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "crm-webhooks/1")
        .header(http::header::CONNECTION, "close");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_BYTES {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    excerpt.extend_from_slice(d);
                }
            }
            // The status is what counts; a body cut short does not change it.
            Some(Err(_)) | None => break,
        }
    }
    excerpt.truncate(EXCERPT_BYTES);
    Ok(Answer {
        status,
        excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
    })
}
