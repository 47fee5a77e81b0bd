//! The extractor with an online configuration, against the real server on a loopback port: the server's
//! verdict, logouts included, is what the handler sees.
#![cfg(feature = "validate")]

use std::net::{SocketAddr, TcpListener};

use actix_web::http::{StatusCode, header};
use actix_web::{App, HttpResponse, rt, test, web};
use crm_auth_actix::{AuthConfig, Authenticated, Client};
use crm_auth_core::{Claims, DateFormat, ErrorCode, Keyring, SigningKey, issue};
use crm_auth_server::service::admin;
use serde_json::{Value, json};

/// A well-formed token for `username` signed by a key the server does not know.
fn foreign_token(username: &str) -> anyhow::Result<String> {
    let keyring = Keyring::new(vec![SigningKey::new("k1", vec![0x5a; 32])?])?;
    let claims = Claims {
        jti: "EE63A82C4FEBE02FF34E90DD1EBA5ABE".to_owned(),
        usr: username.to_owned(),
        org: "Acme".to_owned(),
        oun: "HQ".to_owned(),
        iat: 1_700_000_000,
        exp: 1_700_007_200,
        iss: Some("crm-auth".to_owned()),
        r#gen: 0,
    };
    Ok(issue(&keyring, &claims, DateFormat::Numeric))
}

async fn whoami(user: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "session_id": user.session_id,
        "username": user.username,
        "organisation": user.organisation,
        "unit": user.unit,
        "expires_at": user.expires_at,
    }))
}

macro_rules! app {
    ($client:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new(AuthConfig::online($client)))
                .route("/whoami", web::get().to(whoami))
                .route("/whoami", web::post().to(whoami)),
        )
        .await
    };
}

macro_rules! call {
    ($app:expr, $req:expr) => {{
        let resp = test::call_service(&$app, $req).await;
        let status = resp.status();
        let body: Value = serde_json::from_slice(&test::read_body(resp).await)?;
        (status, body)
    }};
}

fn client(addr: SocketAddr) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .base_url(format!("http://{addr}"))
        .retries(0)
        .build()?)
}

#[actix_web::test]
async fn the_real_servers_verdict_decides() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = crm_auth_server::state::AppState::from_settings(
        crm_auth_server::settings::Settings::for_test(dir.path()),
    )?;
    let key = {
        let conn = &mut *state.store.pool().get()?;
        let org = admin::add_organisation(conn, "Acme", 1)?;
        admin::add_unit(conn, &org, "HQ", None, 1)?;
        let user = admin::add_user(conn, &org, "alice", &["HQ".into()], None, None, 1)?;
        admin::create_key(conn, &user, 1)?.1
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = crm_auth_server::http::serve(listener, state)?;
    std::thread::spawn(move || rt::System::new().block_on(server));
    let client = client(addr)?;
    let token = client.token_with_api_key(key.expose(), None).await?;
    let app = app!(client.clone());
    let ask = |token: &str| {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request()
    };

    let (status, body) = call!(app, ask(token.as_str()));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["username"], "alice");
    assert_eq!(body["unit"], "HQ");
    assert_eq!(body["session_id"], token.session_id());

    // A logout at the server bites at once, although the token itself is still valid.
    client.release(token.as_str()).await?;
    let (status, body) = call!(app, ask(token.as_str()));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"]["code"], "SESSION_ENDED");
    assert_eq!(body["data"], json!({}));
    assert!(!body.to_string().contains(token.as_str()));

    // A token the server never issued is refused by the server too.
    let (status, body) = call!(app, ask(&foreign_token("alice")?));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"]["code"], "INVALID_TOKEN");
    Ok(())
}

#[actix_web::test]
async fn an_unreachable_server_is_unavailable_not_a_pass() -> anyhow::Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let app = app!(client(SocketAddr::from(([127, 0, 0, 1], port)))?);
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header((
            header::AUTHORIZATION,
            format!("Bearer {}", foreign_token("alice")?),
        ))
        .to_request();
    let (status, body) = call!(app, req);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({
            "data": {},
            "status": {
                "code": "UNAVAILABLE",
                "description": "",
                "message": ErrorCode::Unavailable.default_message(),
            },
        })
    );
    Ok(())
}
