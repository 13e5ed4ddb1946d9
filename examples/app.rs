//! An application talking to PostgreSQL through jitgate: nothing jitgate-specific in the
//! code — point the connection string at the proxy and connect as an identity.
//!
//! ```sh
//! cargo run --release -- demo                      # prints a psql line with the URL
//! cargo run --example app -- "postgresql://alice:…@127.0.0.1:6432/demo"
//! ```
//! Every statement below shows up in the audit log (`jitgate audit tail`), the INSERT
//! with its parameters. When the grant expires, the next statement fails with the
//! FATAL error jitgate sends (SQLSTATE 57P01) and the message says which grant ended.

use std::time::Duration;

use tokio_postgres::NoTls;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: app <postgresql://identity:password@proxy-host:port/target>")?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    let driver = tokio::spawn(connection);

    client
        .batch_execute("CREATE TABLE IF NOT EXISTS app_events(id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), what text)")
        .await?;
    let insert = client
        .prepare("INSERT INTO app_events(what) VALUES ($1) RETURNING id")
        .await?;
    for n in 0.. {
        let what = format!("tick {n}");
        match client.query_one(&insert, &[&what]).await {
            Ok(row) => println!("inserted event {}", row.get::<_, i64>(0)),
            Err(e) => {
                // The grant ended (or was revoked): jitgate says why.
                match e.as_db_error() {
                    Some(db) => eprintln!(
                        "session ended: {} (SQLSTATE {})",
                        db.message(),
                        db.code().code()
                    ),
                    None => eprintln!("session ended: {e}"),
                }
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = driver.await;
    Ok(())
}
