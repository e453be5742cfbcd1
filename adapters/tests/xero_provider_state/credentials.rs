//! The encrypted credential store, refresh before use, the credential cache.

use super::*;

fn creds(id: i64, refresh: &str) -> NewCredentials {
    NewCredentials {
        connection_id: id,
        provider: "xero".into(),
        access_token: Secret::new("access-SECRET-1"),
        refresh_token: Secret::new(refresh),
        access_expires_at: Utc::now() + chrono::Duration::minutes(30),
        external_tenant_id: Some("tenant-1".into()),
        api_base_url: "http://127.0.0.1:1/api.xro/2.0".into(),
        identity_base_url: "http://127.0.0.1:1".into(),
        options: serde_json::json!({}),
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn credentials_are_encrypted_at_rest(pool: PgPool) {
    let key = SecretKey::from_bytes([1; 32]);
    state::save_credentials(&pool, &key, &creds(1, "refresh-SECRET-1"))
        .await
        .unwrap();
    let raw: Vec<u8> =
        sqlx::query_scalar("SELECT sealed_tokens FROM ledgerflow.provider_credentials")
            .fetch_one(&pool)
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("SECRET"),
        "tokens must not be stored in clear"
    );
    let loaded = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(loaded.refresh_token.expose(), "refresh-SECRET-1");
    assert!(
        !format!("{loaded:?}").contains("SECRET"),
        "Debug must not show tokens"
    );
    let wrong = SecretKey::from_bytes([2; 32]);
    assert!(matches!(
        state::load_credentials(&pool, &wrong, 1).await,
        Err(CredentialError::Crypto(_))
    ));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn refresh_persists_before_use_and_refusal_needs_reconnect(pool: PgPool) {
    let key = SecretKey::from_bytes([1; 32]);
    state::save_credentials(&pool, &key, &creds(1, "rt-0"))
        .await
        .unwrap();
    let seen = state::load_credentials(&pool, &key, 1).await.unwrap();
    let fresh = state::refresh_credentials(&pool, &key, 1, seen.generation, |c| async move {
        assert_eq!(c.refresh_token.expose(), "rt-0");
        Ok(RefreshedTokens {
            access_token: Secret::new("at-1"),
            refresh_token: Secret::new("rt-1"),
            access_expires_at: Utc::now() + chrono::Duration::minutes(30),
            refresh_expires_at: None,
        })
    })
    .await
    .unwrap();
    // Stored before it was handed back.
    let stored = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(stored.refresh_token.expose(), "rt-1");
    assert_eq!(stored.generation, fresh.generation);
    // A stale caller gets the stored set; its closure is never called.
    let again = state::refresh_credentials(&pool, &key, 1, seen.generation, |_| async {
        Err(RefreshFailure::Transient("must not be called".into()))
    })
    .await
    .unwrap();
    assert_eq!(again.refresh_token.expose(), "rt-1");
    // A transient failure keeps the token; a refusal marks reconnect needed.
    let err = state::refresh_credentials(&pool, &key, 1, stored.generation, |_| async {
        Err(RefreshFailure::Transient("timeout".into()))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, CredentialError::Transient(_)));
    let err = state::refresh_credentials(&pool, &key, 1, stored.generation, |_| async {
        Err(RefreshFailure::Refused("invalid_grant".into()))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, CredentialError::ReconnectNeeded(_)));
    let after = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(after.status, CredentialStatus::ReconnectNeeded);
    assert_eq!(after.refresh_token.expose(), "rt-1");
    // Reconnecting (saving new credentials) makes it active again.
    state::save_credentials(&pool, &key, &creds(1, "rt-new"))
        .await
        .unwrap();
    let back = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(back.status, CredentialStatus::Active);
}

/// The database goes away (here: the session holding the row lock is
/// terminated, as a restart terminates it) after the provider rotated a
/// single-use refresh token: the new set was only in memory. It must still
/// be stored, or the connection is lost for good.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_refreshed_set_survives_the_database_going_away_before_commit(pool: PgPool) {
    let key = SecretKey::from_bytes([1; 32]);
    state::save_credentials(&pool, &key, &creds(1, "rt-0"))
        .await
        .unwrap();
    let seen = state::load_credentials(&pool, &key, 1).await.unwrap();
    let killer = pool.clone();
    let fresh = state::refresh_credentials(&pool, &key, 1, seen.generation, |c| async move {
        assert_eq!(c.refresh_token.expose(), "rt-0");
        // The session that holds the credentials row locked.
        let locker: i32 = sqlx::query_scalar(
            "SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE c.relname = 'provider_credentials' AND l.pid <> pg_backend_pid()
             LIMIT 1",
        )
        .fetch_one(&killer)
        .await
        .unwrap();
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(locker)
            .fetch_one(&killer)
            .await
            .unwrap();
        assert!(killed);
        // The provider has spent rt-0 and answered with rt-1.
        Ok(RefreshedTokens {
            access_token: Secret::new("at-1"),
            refresh_token: Secret::new("rt-1"),
            access_expires_at: Utc::now() + chrono::Duration::minutes(30),
            refresh_expires_at: None,
        })
    })
    .await
    .expect("the refreshed set is stored once the database answers again");
    assert_eq!(fresh.refresh_token.expose(), "rt-1");
    let stored = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(stored.refresh_token.expose(), "rt-1");
    assert_eq!(stored.access_token.expose(), "at-1");
    assert_eq!(stored.generation, seen.generation + 1);
    assert_eq!(stored.generation, fresh.generation);
    assert_eq!(stored.status, CredentialStatus::Active);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_credential_cache_serves_a_copy_for_its_ttl_and_never_an_older_generation(
    pool: PgPool,
) {
    use ledgerflow_workflows::credential_cache::CredentialCache;
    let key = SecretKey::from_bytes([1; 32]);
    state::save_credentials(&pool, &key, &creds(1, "rt-0"))
        .await
        .unwrap();
    let cache = CredentialCache::new(Duration::from_millis(400));
    let first = cache.load(&pool, &key, 1).await.unwrap();

    // Another process marks the connection: the copy is served until it
    // expires, then the store is read again.
    state::mark_reconnect_needed(&pool, 1, "revoked")
        .await
        .unwrap();
    assert_eq!(
        cache.load(&pool, &key, 1).await.unwrap().status,
        CredentialStatus::Active
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let reread = cache.load(&pool, &key, 1).await.unwrap();
    assert_eq!(reread.status, CredentialStatus::ReconnectNeeded);

    // A newer generation kept is not replaced by an older one.
    cache.remember(&reread);
    cache.remember(&first);
    assert_eq!(
        cache.load(&pool, &key, 1).await.unwrap().generation,
        reread.generation.max(first.generation)
    );
    // Forgotten: read from the store at once.
    state::save_credentials(&pool, &key, &creds(1, "rt-new"))
        .await
        .unwrap();
    cache.forget(1);
    let fresh = cache.load(&pool, &key, 1).await.unwrap();
    assert_eq!(fresh.refresh_token.expose(), "rt-new");
    assert_eq!(fresh.status, CredentialStatus::Active);

    // A zero time to live reads the store every time.
    let off = CredentialCache::new(Duration::ZERO);
    off.load(&pool, &key, 1).await.unwrap();
    state::mark_reconnect_needed(&pool, 1, "revoked again")
        .await
        .unwrap();
    assert_eq!(
        off.load(&pool, &key, 1).await.unwrap().status,
        CredentialStatus::ReconnectNeeded
    );
}
