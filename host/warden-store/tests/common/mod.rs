//! What the store's test files share: a database of either backend, and the macro that runs
//! each scenario over both.

use warden_store::Store;
use warden_store::testing::Postgres;

/// A database a test may open (and reopen, as a restarted service would).
pub struct Db {
    pub url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    _server: Option<&'static Postgres>,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("state/warden.db").display());
        Db {
            url,
            _sqlite_dir: Some(dir),
            _server: None,
        }
    }

    pub async fn postgres() -> Option<Db> {
        let server = Postgres::shared()?;
        let url = server.create_database().await;
        Some(Db {
            url,
            _sqlite_dir: None,
            _server: Some(server),
        })
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }
}

/// Each named scenario becomes `sqlite::NAME` and `postgres::NAME`.
macro_rules! over_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::Db::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = super::Db::postgres().await else { return };
                    super::$name(&db).await
                }
            )*
        }
    };
}
