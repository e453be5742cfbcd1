//! Bad input at the operator's command line, through the real binary on a
//! fresh database: unknown settings and options keys refused with a "did
//! you mean", the sealing key checked against the one stored credentials
//! were sealed with (malformed and different told apart), one active
//! connection per Shopify shop and Xero organisation, identifiers checked
//! and never echoed with raw control characters, and a closed stdout
//! (`| head`) ending quietly.

use std::io::Read;
use std::process::{Command, Output, Stdio};

use sqlx::{ConnectOptions, PgPool};

const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";

fn ledgerflow(pool: &PgPool, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow"));
    cmd.env(
        "DATABASE_URL",
        pool.connect_options().to_url_lossy().to_string(),
    )
    .env_remove("LEDGERFLOW_SECRET_KEY")
    .env_remove("LEDGERFLOW_REFRESH_TOKEN")
    .env_remove("LEDGERFLOW_ACCESS_TOKEN")
    .args(args)
    .envs(env.iter().copied());
    cmd.output().expect("run ledgerflow")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ledgerflow failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The error of a refused command; no panic, no raw control character.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "a control character echoed raw: {stderr:?}"
    );
    stderr
}

fn tenant(pool: &PgPool, id: &str) {
    ok(&ledgerflow(
        pool,
        &["tenant", "add", id, "--name", "Spoke & Chain"],
        &[],
    ));
}

fn add_xero(pool: &PgPool, tenant: &str, org: &str, key: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "connection",
        "add",
        "--tenant",
        tenant,
        "--provider",
        "xero",
        "--xero-tenant-id",
        org,
        "--api-base-url",
        "http://127.0.0.1:9/api.xro/2.0",
        "--identity-base-url",
        "http://127.0.0.1:9",
    ];
    args.extend_from_slice(extra);
    ledgerflow(
        pool,
        &args,
        &[
            ("LEDGERFLOW_SECRET_KEY", key),
            ("LEDGERFLOW_REFRESH_TOKEN", "rt-1"),
        ],
    )
}

fn add_shopify(pool: &PgPool, tenant: &str, shop: &str) -> Output {
    ledgerflow(
        pool,
        &[
            "connection",
            "add",
            "--tenant",
            tenant,
            "--provider",
            "shopify",
            "--shop-domain",
            shop,
        ],
        &[
            ("LEDGERFLOW_SECRET_KEY", KEY_A),
            ("LEDGERFLOW_ACCESS_TOKEN", "shpat_1"),
        ],
    )
}

async fn connections(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledgerflow.connections")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn unknown_settings_and_options_keys_are_refused_with_a_suggestion(pool: PgPool) {
    tenant(&pool, "shop-1");
    let typo = refused(&add_xero(
        &pool,
        "shop-1",
        "org-1",
        KEY_A,
        &["--settings-json", r#"{"auto_synk":false}"#],
    ));
    assert!(typo.contains("unknown setting key \"auto_synk\""), "{typo}");
    assert!(typo.contains("did you mean `auto_sync`?"), "{typo}");

    let nested = refused(&add_xero(
        &pool,
        "shop-1",
        "org-1",
        KEY_A,
        &[
            "--settings-json",
            r#"{"provider":{"provider":"xero","sync_paymnts":true}}"#,
        ],
    ));
    assert!(
        nested.contains("in `provider`") && nested.contains("did you mean `sync_payments`?"),
        "{nested}"
    );

    let option = refused(&add_xero(
        &pool,
        "shop-1",
        "org-1",
        KEY_A,
        &["--options-json", r#"{"sales_acount_code":"200"}"#],
    ));
    assert!(
        option.contains("did you mean `sales_account_code`?"),
        "{option}"
    );
    assert_eq!(connections(&pool).await, 0, "nothing written");

    // Spelled right, the same settings are taken.
    ok(&add_xero(
        &pool,
        "shop-1",
        "org-1",
        KEY_A,
        &["--settings-json", r#"{"auto_sync":false}"#],
    ));
    assert_eq!(connections(&pool).await, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_malformed_or_different_key_is_refused_saying_which(pool: PgPool) {
    tenant(&pool, "shop-1");
    tenant(&pool, "shop-2");
    ok(&add_xero(&pool, "shop-1", "org-1", KEY_A, &[]));
    let stored: Option<String> =
        sqlx::query_scalar("SELECT key_fingerprint FROM ledgerflow.provider_credentials")
            .fetch_one(&pool)
            .await
            .unwrap();
    let fingerprint = stored.expect("a fingerprint is stored");
    assert!(
        !fingerprint.contains("0101"),
        "a keyed hash, not the key: {fingerprint}"
    );

    let malformed = refused(&add_xero(&pool, "shop-2", "org-2", "not-a-key", &[]));
    assert!(
        malformed.contains("LEDGERFLOW_SECRET_KEY is malformed"),
        "{malformed}"
    );
    let different = refused(&add_xero(&pool, "shop-2", "org-2", KEY_B, &[]));
    assert!(
        different.contains("is not the key that sealed the credentials of connection 1"),
        "{different}"
    );
    assert_eq!(connections(&pool).await, 1, "nothing written");

    // Reconnecting under another key would re-seal connection 1 so that no
    // worker (all on key A) could open it: refused, the row untouched.
    let generation = || async {
        sqlx::query_scalar::<_, i64>("SELECT generation FROM ledgerflow.provider_credentials")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = generation().await;
    let reconnect = ledgerflow(
        &pool,
        &["connection", "reconnect", "1", "--refresh-token", "rt-2"],
        &[("LEDGERFLOW_SECRET_KEY", KEY_B)],
    );
    let err = refused(&reconnect);
    assert!(
        err.contains("not the key that sealed the credentials of connection 1"),
        "{err}"
    );
    assert_eq!(generation().await, before);
    ok(&ledgerflow(
        &pool,
        &["connection", "reconnect", "1", "--refresh-token", "rt-2"],
        &[("LEDGERFLOW_SECRET_KEY", KEY_A)],
    ));
    assert_eq!(generation().await, before + 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn one_active_connection_per_shop_and_per_organisation(pool: PgPool) {
    tenant(&pool, "shop-1");
    tenant(&pool, "shop-2");
    ok(&add_xero(
        &pool,
        "shop-1",
        "8f6c1e2a-0b7d-4c1e-9a55-3f1f0c2d9e11",
        KEY_A,
        &[],
    ));
    let twin = refused(&add_xero(
        &pool,
        "shop-2",
        "8F6C1E2A-0B7D-4C1E-9A55-3F1F0C2D9E11",
        KEY_A,
        &[],
    ));
    assert!(
        twin.contains("connection 1 already connects the Xero organisation"),
        "{twin}"
    );

    ok(&add_shopify(&pool, "shop-1", "spoke.myshopify.com"));
    let twin = refused(&add_shopify(&pool, "shop-2", "spoke.myshopify.com"));
    assert!(
        twin.contains("connection 2 already connects the Shopify shop"),
        "{twin}"
    );
    assert_eq!(connections(&pool).await, 2);

    // Disabled, the organisation is free; enabling the old one again is
    // then refused while the new one is active.
    ok(&ledgerflow(&pool, &["connection", "disable", "1"], &[]));
    ok(&add_xero(
        &pool,
        "shop-2",
        "8f6c1e2a-0b7d-4c1e-9a55-3f1f0c2d9e11",
        KEY_A,
        &[],
    ));
    let enable = refused(&ledgerflow(&pool, &["connection", "enable", "1"], &[]));
    assert!(enable.contains("connection 3 already connects"), "{enable}");
    ok(&ledgerflow(&pool, &["connection", "disable", "3"], &[]));
    let enabled = ok(&ledgerflow(&pool, &["connection", "enable", "1"], &[]));
    assert!(enabled.contains("connection 1 is enabled"), "{enabled}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn identifiers_are_checked_and_control_characters_never_echoed(pool: PgPool) {
    let bad_tenant = refused(&ledgerflow(
        &pool,
        &["tenant", "add", "shop\u{1b}[31m", "--name", "x"],
        &[],
    ));
    assert!(bad_tenant.contains("tenant id"), "{bad_tenant}");
    tenant(&pool, "shop-1");
    for shop in [
        "evil\u{1b}[2J.myshopify.com",
        "https://spoke.myshopify.com",
        "Spoke.myshopify.com",
    ] {
        let e = refused(&add_shopify(&pool, "shop-1", shop));
        assert!(e.contains("shop domain"), "{e}");
    }
    let e = refused(&add_xero(&pool, "shop-1", "org\u{7}1", KEY_A, &[]));
    assert!(e.contains("organisation id"), "{e}");
    let e = refused(&ledgerflow(
        &pool,
        &[
            "connection",
            "add",
            "--tenant",
            "shop-1",
            "--provider",
            "xe\u{7}ro",
        ],
        &[],
    ));
    assert!(e.contains("unknown provider \"xe\\u{7}ro\""), "{e}");
    assert_eq!(connections(&pool).await, 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_closed_stdout_ends_quietly(pool: PgPool) {
    tenant(&pool, "shop-1");
    ok(&add_xero(&pool, "shop-1", "org-1", KEY_A, &[]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerflow"))
        .env(
            "DATABASE_URL",
            pool.connect_options().to_url_lossy().to_string(),
        )
        .args(["connection", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line is written (`| head -0`).
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn operator_output_is_in_words_with_json_on_every_list_and_show(pool: PgPool) {
    tenant(&pool, "shop-1");
    // No access token: stored as expired so the first call refreshes.
    ok(&add_xero(&pool, "shop-1", "org-1", KEY_A, &[]));
    let show = ok(&ledgerflow(&pool, &["connection", "show", "1"], &[]));
    assert!(
        show.contains("access token: none yet, or expired"),
        "{show}"
    );

    let unknown = ok(&ledgerflow(
        &pool,
        &["invoice", "status", "1", "INV-TYPO"],
        &[],
    ));
    assert!(unknown.contains("status:      not sent"), "{unknown}");
    assert!(unknown.contains("check it for a typo"), "{unknown}");
    assert!(!unknown.contains("not_sent"), "{unknown}");

    let tenants = ok(&ledgerflow(&pool, &["tenant", "list"], &[]));
    assert!(
        tenants.contains("shop-1") && tenants.contains("Spoke & Chain"),
        "{tenants}"
    );
    let one = ok(&ledgerflow(&pool, &["tenant", "show", "shop-1"], &[]));
    assert!(one.contains("connection 1: Xero, active"), "{one}");
    refused(&ledgerflow(&pool, &["tenant", "show", "nobody"], &[]));

    for args in [
        &["tenant", "list", "--json"][..],
        &["tenant", "show", "shop-1", "--json"],
        &["connection", "list", "--json"],
        &["connection", "show", "1", "--json"],
        &["workflow", "list", "--json"],
        &["summary", "list", "--json"],
        &["backfill", "list", "--json"],
        &["backfill", "ready", "--connection", "1", "--json"],
    ] {
        let out = ok(&ledgerflow(&pool, args, &[]));
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("{args:?} is not JSON ({e}): {out}"));
    }

    // A job waiting in a queue nobody serves says so, with its queue.
    let id: i64 = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue('queue-probe', '{}'::jsonb, queue => 'nightly')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let job = ok(&ledgerflow(&pool, &["job", "show", &id.to_string()], &[]));
    assert!(job.contains("queue:     nightly"), "{job}");
    assert!(job.contains("state:     available"), "{job}");
    assert!(
        job.contains("note:      no worker is running; start one with --queues nightly"),
        "{job}"
    );
    let json = ok(&ledgerflow(
        &pool,
        &["job", "show", &id.to_string(), "--json"],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["job"]["queue"], "nightly");
}
