use super::*;

const KEY_B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

fn secrets() -> IntegrationSecrets {
    IntegrationSecrets {
        webhook_secret: Some("hs-client-secret".into()),
        api: Some(ApiCredentials {
            access_token: Some("pat-na1-123".into()),
            ..ApiCredentials::default()
        }),
        ..IntegrationSecrets::default()
    }
}

#[test]
fn keys_parse_from_base64_and_hex_and_nothing_else() {
    let b64 = SecretKey::parse(KEY_B64).unwrap();
    let hex = SecretKey::parse("abcdef1234567890abcdef1234567890abcdef1234567890abcdef1234567890")
        .unwrap();
    assert_eq!(b64.id(), hex.id(), "same 32 bytes, same key id");
    assert_eq!(b64.id().len(), 16);
    for bad in ["", "short", "q83vEjRWeJCrze8SNFZ4kA==", &"z".repeat(64)] {
        assert_eq!(
            SecretKey::parse(bad).unwrap_err(),
            KeyError::Malformed,
            "{bad}"
        );
    }
    assert!(!format!("{b64:?}").contains("q83v"));
}

#[test]
fn sealed_credentials_open_only_with_the_same_key_and_integration() {
    let key = SecretKey::parse(KEY_B64).unwrap();
    let id = Uuid::new_v4();
    let sealed = seal(&key, id, &secrets()).unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed.ciphertext).contains("hs-client-secret"),
        "the secret is not stored in clear"
    );
    assert_eq!(open(&key, id, &sealed).unwrap(), secrets());

    assert!(matches!(
        open(&key, Uuid::new_v4(), &sealed),
        Err(SecretsError::Undecryptable)
    ));
    let other = SecretKey::parse(&"11".repeat(32)).unwrap();
    assert!(matches!(
        open(&other, id, &sealed),
        Err(SecretsError::WrongKey { .. })
    ));
    let mut tampered = sealed.clone();
    tampered.ciphertext[0] ^= 1;
    assert!(matches!(
        open(&key, id, &tampered),
        Err(SecretsError::Undecryptable)
    ));
    let again = seal(&key, id, &secrets()).unwrap();
    assert_ne!(again.nonce, sealed.nonce, "every seal uses a fresh nonce");
}

#[test]
fn debug_output_never_shows_a_secret() {
    let mut s = secrets();
    s.webhook_basic_auth = Some(BasicAuth {
        username: "user".into(),
        password: "pass-word-1".into(),
    });
    s.webhook_key = Some(WebhookKey {
        header: Some("x-key".into()),
        query: None,
        value: "key-value-1".into(),
    });
    s.api.as_mut().unwrap().oauth = Some(OAuthCredentials {
        client_id: "client".into(),
        client_secret: "client-secret-1".into(),
        refresh_token: Some("refresh-1".into()),
        token_url: None,
        scope: None,
        tenant_id: None,
    });
    let printed = format!("{s:?}");
    for secret in [
        "hs-client-secret",
        "pat-na1-123",
        "pass-word-1",
        "key-value-1",
        "client-secret-1",
        "refresh-1",
    ] {
        assert!(!printed.contains(secret), "{printed}");
    }
    assert!(printed.contains("x-key"), "{printed}");
}

#[test]
fn merging_replaces_given_parts_and_keeps_the_rest() {
    let mut stored = secrets();
    stored.merge(IntegrationSecrets {
        webhook_secret: Some("rotated".into()),
        ..IntegrationSecrets::default()
    });
    assert_eq!(stored.webhook_secret.as_deref(), Some("rotated"));
    assert_eq!(stored.api, secrets().api);
}

#[test]
fn validation_names_the_part_a_crm_cannot_use() {
    assert!(secrets().validate("hubspot", &Egress::default()).is_ok());
    let err = secrets()
        .validate("pipedrive", &Egress::default())
        .unwrap_err();
    assert!(err.starts_with("credentials.webhook_secret"), "{err}");
    let no_url = IntegrationSecrets {
        api: Some(ApiCredentials {
            access_token: Some("t".into()),
            ..ApiCredentials::default()
        }),
        ..IntegrationSecrets::default()
    };
    let err = no_url
        .validate("salesforce", &Egress::default())
        .unwrap_err();
    assert!(err.starts_with("credentials.api.base_url"), "{err}");
    let both = IntegrationSecrets {
        webhook_key: Some(WebhookKey {
            header: Some("h".into()),
            query: Some("q".into()),
            value: "v".into(),
        }),
        ..IntegrationSecrets::default()
    };
    assert!(both.validate("dynamics", &Egress::default()).is_err());
}
