//! The administration API on the blocking client: [`crate::Admin`]'s methods run to completion, lists as
//! iterators.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use super::{Client, Runtime};
use crate::Error;
use crate::admin::{
    AuditEvent, CreatedKey, ImportReport, Key, NewKey, NewUnit, NewUser, Organisation, Page, PageQuery,
    Session, Unit, User, UserChange,
};

impl Client {
    /// A blocking handle on the administration API that sends `token` with every call; see
    /// [`crate::Client::admin`].
    ///
    /// ```no_run
    /// # fn run() -> Result<(), crm_auth_client::Error> {
    /// use crm_auth_client::Credentials;
    /// use crm_auth_client::blocking::Client;
    ///
    /// let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
    /// let token = client.token(&Credentials::password("operator", "secret", "demo"))?;
    /// let admin = client.admin(token.as_str())?;
    /// for user in admin.all_users("Acme") {
    ///     let user = user?;
    ///     println!("{} ({})", user.username, user.role);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn admin(&self, token: &str) -> Result<Admin, Error> {
        Ok(Admin {
            inner: self.inner.admin(token)?,
            runtime: Arc::clone(&self.runtime),
        })
    }
}

/// A blocking [`crate::Admin`]: the administration API's calls, run to completion.
///
/// Cloning is cheap; clones share the client's runtime and connection pool. `Debug` does not show the token.
#[derive(Clone)]
pub struct Admin {
    inner: crate::Admin,
    runtime: Arc<Runtime>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Every item of a list, fetched page by page as the iteration goes: the `all_*` methods of the blocking
/// [`Admin`].
///
/// It follows `next_cursor` until the last page and ends after yielding an error.
pub struct Items<T> {
    stream: Option<BoxStream<'static, Result<T, Error>>>,
    runtime: Arc<Runtime>,
}

impl<T> Iterator for Items<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        let stream = self.stream.as_mut()?;
        let next = self
            .runtime
            .block_on(async { stream.next().await.transpose() })
            .transpose();
        // A refused call (inside an async runtime, say) would fail the same way on every call.
        if !matches!(next, Some(Ok(_))) {
            self.stream = None;
        }
        next
    }
}

impl<T> fmt::Debug for Items<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Items")
            .field("finished", &self.stream.is_none())
            .finish_non_exhaustive()
    }
}

impl Admin {
    fn items<T>(&self, stream: BoxStream<'static, Result<T, Error>>) -> Items<T> {
        Items {
            stream: Some(stream),
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// See [`crate::Admin::list_organisations`].
    pub fn list_organisations(&self, page: &PageQuery) -> Result<Page<Organisation>, Error> {
        self.runtime.block_on(self.inner.list_organisations(page))
    }

    /// See [`crate::Admin::all_organisations`].
    pub fn all_organisations(&self) -> Items<Organisation> {
        self.items(self.inner.all_organisations())
    }

    /// See [`crate::Admin::organisation`].
    pub fn organisation(&self, org: &str) -> Result<Organisation, Error> {
        self.runtime.block_on(self.inner.organisation(org))
    }

    /// See [`crate::Admin::create_organisation`].
    pub fn create_organisation(&self, name: &str) -> Result<Organisation, Error> {
        self.runtime.block_on(self.inner.create_organisation(name))
    }

    /// See [`crate::Admin::list_units`].
    pub fn list_units(&self, org: &str, page: &PageQuery) -> Result<Page<Unit>, Error> {
        self.runtime.block_on(self.inner.list_units(org, page))
    }

    /// See [`crate::Admin::all_units`].
    pub fn all_units(&self, org: &str) -> Items<Unit> {
        self.items(self.inner.all_units(org))
    }

    /// See [`crate::Admin::create_unit`].
    pub fn create_unit(&self, org: &str, unit: &NewUnit) -> Result<Unit, Error> {
        self.runtime.block_on(self.inner.create_unit(org, unit))
    }

    /// See [`crate::Admin::list_users`].
    pub fn list_users(&self, org: &str, page: &PageQuery) -> Result<Page<User>, Error> {
        self.runtime.block_on(self.inner.list_users(org, page))
    }

    /// See [`crate::Admin::all_users`].
    pub fn all_users(&self, org: &str) -> Items<User> {
        self.items(self.inner.all_users(org))
    }

    /// See [`crate::Admin::create_user`].
    pub fn create_user(&self, org: &str, user: &NewUser) -> Result<User, Error> {
        self.runtime.block_on(self.inner.create_user(org, user))
    }

    /// See [`crate::Admin::user`].
    pub fn user(&self, org: &str, username: &str) -> Result<User, Error> {
        self.runtime.block_on(self.inner.user(org, username))
    }

    /// See [`crate::Admin::update_user`].
    pub fn update_user(&self, org: &str, username: &str, change: &UserChange) -> Result<User, Error> {
        self.runtime
            .block_on(self.inner.update_user(org, username, change))
    }

    /// See [`crate::Admin::end_user_sessions`].
    pub fn end_user_sessions(&self, org: &str, username: &str) -> Result<u64, Error> {
        self.runtime.block_on(self.inner.end_user_sessions(org, username))
    }

    /// See [`crate::Admin::list_keys`].
    pub fn list_keys(&self, org: &str, page: &PageQuery) -> Result<Page<Key>, Error> {
        self.runtime.block_on(self.inner.list_keys(org, page))
    }

    /// See [`crate::Admin::all_keys`].
    pub fn all_keys(&self, org: &str) -> Items<Key> {
        self.items(self.inner.all_keys(org))
    }

    /// See [`crate::Admin::create_key`].
    pub fn create_key(&self, org: &str, key: &NewKey) -> Result<CreatedKey, Error> {
        self.runtime.block_on(self.inner.create_key(org, key))
    }

    /// See [`crate::Admin::revoke_key`].
    pub fn revoke_key(&self, org: &str, id: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.revoke_key(org, id))
    }

    /// See [`crate::Admin::list_sessions`].
    pub fn list_sessions(
        &self,
        org: &str,
        username: Option<&str>,
        page: &PageQuery,
    ) -> Result<Page<Session>, Error> {
        self.runtime
            .block_on(self.inner.list_sessions(org, username, page))
    }

    /// See [`crate::Admin::all_sessions`].
    pub fn all_sessions(&self, org: &str, username: Option<&str>) -> Items<Session> {
        self.items(self.inner.all_sessions(org, username))
    }

    /// See [`crate::Admin::revoke_session`].
    pub fn revoke_session(&self, org: &str, id: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.revoke_session(org, id))
    }

    /// See [`crate::Admin::list_audit`].
    pub fn list_audit(&self, org: &str, page: &PageQuery) -> Result<Page<AuditEvent>, Error> {
        self.runtime.block_on(self.inner.list_audit(org, page))
    }

    /// See [`crate::Admin::all_audit`].
    pub fn all_audit(&self, org: &str) -> Items<AuditEvent> {
        self.items(self.inner.all_audit(org))
    }

    /// See [`crate::Admin::import`].
    pub fn import(&self, ndjson: impl AsRef<[u8]>, dry_run: bool) -> Result<ImportReport, Error> {
        self.runtime.block_on(self.inner.import(ndjson, dry_run))
    }
}

#[cfg(test)]
mod tests {
    use crm_auth_core::ErrorCode;

    use super::*;
    use crate::testserver::{Reply, TestServer};

    fn unit(name: &str) -> Unit {
        Unit {
            id: "00000000000000000000000000000002".to_owned(),
            name: name.to_owned(),
            code: None,
        }
    }

    fn page(items: Vec<Unit>, next_cursor: Option<&str>) -> Reply {
        Reply::data(
            200,
            &Page {
                items,
                next_cursor: next_cursor.map(str::to_owned),
            },
        )
    }

    #[test]
    fn iterators_walk_every_page_and_stop_after_an_error() -> anyhow::Result<()> {
        let server = TestServer::start(vec![
            page(vec![unit("a"), unit("b")], Some("c1")),
            page(vec![unit("c")], None),
        ])?;
        let admin = Client::builder().base_url(server.url()).build()?.admin("a.b.c")?;
        let units = admin.all_units("a b").collect::<Result<Vec<_>, _>>()?;
        assert_eq!(units, [unit("a"), unit("b"), unit("c")]);
        let paths: Vec<String> = server.requests().iter().map(|r| r.path().to_owned()).collect();
        assert_eq!(
            paths,
            [
                "/admin/v1/organisations/a%20b/units?limit=500",
                "/admin/v1/organisations/a%20b/units?limit=500&cursor=c1",
            ]
        );

        server.script(vec![Reply::error(ErrorCode::Forbidden, None)]);
        let mut units = admin.all_units("Acme");
        let first = units.next();
        assert!(matches!(&first, Some(Err(err)) if err.code() == Some(ErrorCode::Forbidden)));
        assert!(units.next().is_none());
        assert_eq!(server.requests().len(), 3);
        Ok(())
    }

    #[test]
    fn calls_run_to_completion() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::data(201, &unit("HQ"))])?;
        let admin = Client::builder().base_url(server.url()).build()?.admin("a.b.c")?;
        let new = NewUnit {
            name: "HQ".to_owned(),
            code: None,
        };
        assert_eq!(admin.create_unit("Acme", &new)?, unit("HQ"));
        server.script(vec![Reply::error(ErrorCode::Conflict, None)]);
        let err = admin.create_unit("Acme", &new).err();
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Conflict));
        assert_eq!(server.requests().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn inside_a_runtime_an_iterator_yields_one_error() -> anyhow::Result<()> {
        let admin = Client::builder()
            .base_url("http://127.0.0.1:9")
            .build()?
            .admin("a.b.c")?;
        let mut orgs = admin.all_organisations();
        assert!(matches!(orgs.next(), Some(Err(Error::InsideAsyncRuntime))));
        assert!(orgs.next().is_none());
        Ok(())
    }
}
