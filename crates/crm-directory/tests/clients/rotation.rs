//! OAuth refresh tokens: the refresh-token grant, a token the CRM rotates kept in place of the one
//! redeemed, and a token another client redeemed first replaced by the stored one.

use std::future::Future;
use std::pin::Pin;

use super::*;

#[tokio::test]
async fn hubspot_oauth_uses_the_refresh_token_grant() {
    let seen = Arc::new(Seen::default());
    let base = serve(hubspot(seen.clone())).await;
    let client = oauth_client(&base, "rt-0");
    assert_eq!(
        client.lookup("41629779").await.unwrap().name.as_deref(),
        Some("Mary Major")
    );
    let form = seen.forms.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "rt-0");
    assert_eq!(form["client_id"], "client-id-1");
}

/// Where the tests' clients keep rotated refresh tokens: in memory, each keep recorded.
#[derive(Default)]
struct Kept {
    stored: Mutex<Option<String>>,
    keeps: Mutex<Vec<(String, String)>>,
}

impl KeepRefreshToken for Kept {
    fn keep<'a>(
        &'a self,
        used: &'a str,
        rotated: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>> {
        Box::pin(async move {
            self.keeps
                .lock()
                .unwrap()
                .push((used.to_owned(), rotated.to_owned()));
            let mut stored = self.stored.lock().unwrap();
            if stored.as_deref() != Some(used) {
                return Ok(false);
            }
            *stored = Some(rotated.to_owned());
            Ok(true)
        })
    }

    fn stored(&self) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + '_>> {
        Box::pin(async move { Ok(self.stored.lock().unwrap().clone()) })
    }
}

/// A HubSpot OAuth client holding `refresh_token`.
fn oauth_client(base: &str, refresh_token: &str) -> DirectoryClient {
    DirectoryClient::new(
        Crm::HubSpot,
        Credentials {
            base_url: Some(base.to_owned()),
            access_token: None,
            oauth: Some(oauth(Some(refresh_token))),
        },
        fast(),
    )
    .unwrap()
}

/// [`oauth_client`], keeping rotations in `kept`.
fn keeping(base: &str, refresh_token: &str, kept: &Arc<Kept>) -> DirectoryClient {
    oauth_client(base, refresh_token).keeping_rotated_tokens(kept.clone())
}

#[tokio::test]
async fn a_rotated_refresh_token_is_kept_in_place_of_the_one_redeemed() {
    let seen = Arc::new(Seen::default());
    let base = serve(hubspot(seen.clone())).await;
    let kept = Arc::new(Kept::default());
    *kept.stored.lock().unwrap() = Some("rt-0".into());
    let client = keeping(&base, "rt-0", &kept);
    client.lookup("41629779").await.unwrap();
    assert_eq!(
        *kept.keeps.lock().unwrap(),
        [("rt-0".to_owned(), "rt-1".to_owned())]
    );
    assert_eq!(kept.stored.lock().unwrap().as_deref(), Some("rt-1"));
}

#[tokio::test]
async fn a_refresh_token_redeemed_by_another_client_is_replaced_by_the_stored_one() {
    let seen = Arc::new(Seen::default());
    let base = serve(hubspot(seen.clone())).await;
    // Another client redeemed rt-stale and stored what it got.
    let kept = Arc::new(Kept::default());
    *kept.stored.lock().unwrap() = Some("rt-0".into());
    let client = keeping(&base, "rt-stale", &kept);
    let user = client.lookup("41629779").await;
    assert_eq!(user.unwrap().name.as_deref(), Some("Mary Major"));
    let presented: Vec<String> = seen
        .forms
        .lock()
        .unwrap()
        .iter()
        .map(|f| f["refresh_token"].clone())
        .collect();
    assert_eq!(presented, ["rt-stale", "rt-0"]);
    assert_eq!(kept.stored.lock().unwrap().as_deref(), Some("rt-1"));
}
