//! Browsers: grpc-web over plain HTTP/1.1 on the gRPC port, with CORS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_tests::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Sends one HTTP/1.1 request and returns the raw response.
async fn http1(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

async fn grpc_web_over_http1(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let user = Uuid::now_v7();
    let t = s.token("acme", user, &["admin"]);
    // One grpc-web data frame: flag 0, length 0 (an empty GetMyAccessRequest).
    let frame = [0u8, 0, 0, 0, 0];
    let head = format!(
        "POST /crm.v1.AccessService/GetMyAccess HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\norigin: https://app.example\r\n\
         authorization: Bearer {t}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        frame.len()
    );
    let resp = http1(s.addr, &head, &frame).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_lowercase().contains("access-control-allow-origin"),
        "{text}"
    );
    assert!(text.contains("grpc-status:0"), "{text}");
    assert!(text.contains(&format!("users/{user}")), "{text}");

    // Without a token: the grpc-web trailer carries UNAUTHENTICATED (16).
    let head = format!(
        "POST /crm.v1.AccessService/GetMyAccess HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web+proto\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        frame.len()
    );
    let resp = http1(s.addr, &head, &frame).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.contains("grpc-status: 16") || text.contains("grpc-status:16"),
        "{text}"
    );

    // CORS preflight from a browser.
    let head = "OPTIONS /crm.v1.AccessService/GetMyAccess HTTP/1.1\r\nhost: localhost\r\n\
                origin: https://app.example\r\naccess-control-request-method: POST\r\n\
                access-control-request-headers: authorization,content-type,x-grpc-web\r\nconnection: close\r\n\r\n";
    let resp = http1(s.addr, head, &[]).await;
    let text = String::from_utf8_lossy(&resp).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    // Named, not `*`: the Fetch standard does not let `*` cover `authorization`.
    assert!(
        text.contains("access-control-allow-origin: https://app.example"),
        "{text}"
    );
    assert!(
        text.contains("access-control-allow-headers: authorization,content-type,x-grpc-web"),
        "{text}"
    );
    assert!(text.contains("access-control-max-age: 7200"), "{text}");
    assert!(!text.contains(": *"), "{text}");
}

/// With configured origins, only those get CORS answers; the gRPC status headers are
/// exposed by name.
async fn cors_follows_configured_origins(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.server.cors_origins = vec!["https://app.example".into()];
    })
    .await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /crm.v1.AccessService/GetMyAccess HTTP/1.1\r\nhost: localhost\r\n\
             origin: {origin}\r\naccess-control-request-method: POST\r\n\
             access-control-request-headers: authorization,content-type,x-grpc-web\r\nconnection: close\r\n\r\n"
        )
    };
    let text =
        String::from_utf8_lossy(&http1(s.addr, &preflight("https://app.example"), &[]).await)
            .to_lowercase();
    assert!(
        text.contains("access-control-allow-origin: https://app.example"),
        "{text}"
    );
    let text =
        String::from_utf8_lossy(&http1(s.addr, &preflight("https://evil.example"), &[]).await)
            .to_lowercase();
    assert!(!text.contains("access-control-allow-origin"), "{text}");
    // An actual call exposes the gRPC status headers by name.
    let frame = [0u8, 0, 0, 0, 0];
    let head = format!(
        "POST /crm.v1.AccessService/GetMyAccess HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\norigin: https://app.example\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        frame.len()
    );
    let text = String::from_utf8_lossy(&http1(s.addr, &head, &frame).await).to_lowercase();
    assert!(
        text.contains(
            "access-control-expose-headers: grpc-status,grpc-message,grpc-status-details-bin"
        ),
        "{text}"
    );
}

crm_tests::both!(grpc_web_over_http1, cors_follows_configured_origins);
