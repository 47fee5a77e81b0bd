use crm_auth_client::{Client, Credentials, Error, Token};

/// Logs in twice: as a service with its Web API key, then as a person with a password, into unit HQ.
pub async fn log_in(base_url: &str, key: &str, password: &str) -> Result<[Token; 2], Error> {
    let client = Client::builder().base_url(base_url).build()?;
    let service = client.token(&Credentials::api_key(key)).await?;
    let person = Credentials::password("ann", password, "Acme").unit("HQ");
    let person = client.token(&person).await?;
    for token in [&service, &person] {
        println!(
            "{} in {} / {}, generation {}, {} s left",
            token.username(),
            token.organisation(),
            token.unit(),
            token.generation(),
            token.expires_in().as_secs()
        );
    }
    Ok([service, person])
}
