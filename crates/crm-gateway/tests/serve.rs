//! The real binary: `crm tenant create`, `crm token`, `crm serve` on a free port, driven by
//! the generated client, then stopped with SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::{self, CreateContactRequest, GetContactRequest, ListContactsRequest};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Request;

const BIN: &str = env!("CARGO_BIN_EXE_crm");

fn crm(dir: &std::path::Path, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env(
            "CRM__DATABASE__URL",
            format!("sqlite://{}/crm.db?mode=rwc", dir.display()),
        )
        .env("CRM__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CRM__AUTH__HS256_SECRET", "e2e-secret-0123456789abcdef");
    c
}

#[tokio::test]
async fn crm_serve_end_to_end() {
    let dir = std::env::temp_dir().join(format!("crm-e2e-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let out = crm(&dir, port, &["tenant", "create", "acme"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crm(
        &dir,
        port,
        &["token", "--tenant", "acme", "--role", "admin"],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let help = crm(&dir, port, &["demo", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("10,000 contacts"));

    // The log goes to a file: it must be plain text, without terminal colour codes.
    let log_path = dir.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = crm(&dir, port, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "crm.v1.ContactService".into(),
            })
            .await;
        if r.is_ok_and(|r| r.get_ref().status == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "crm serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fn auth<T>(token: &str, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }
    let mut contacts = v1::contact_service_client::ContactServiceClient::new(channel.clone());
    let c = contacts
        .create_contact(auth(
            &token,
            CreateContactRequest {
                contact: Some(v1::Contact {
                    given_name: "Ann".into(),
                    family_name: "Lee".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let got = contacts
        .get_contact(auth(
            &token,
            GetContactRequest {
                name: c.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.display_name, "Ann Lee");
    let list = contacts
        .list_contacts(auth(&token, ListContactsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.contacts.len(), 1);
    let anon = contacts
        .list_contacts(Request::new(ListContactsRequest::default()))
        .await;
    assert_eq!(anon.unwrap_err().code(), tonic::Code::Unauthenticated);

    // Graceful stop on SIGTERM.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "crm serve did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.is_empty());
    assert!(!log.contains('\u{1b}'), "colour codes in a log file: {log}");
    let _ = std::fs::remove_dir_all(&dir);
}
