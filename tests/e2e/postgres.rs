//! End to end: a real PostgreSQL exposed as a private proxy by one client and used through
//! another client's visitor by psql and pgbench.
#![allow(clippy::unwrap_used)]

use tunnel_client::{ProxyConfig, VisitorConfig};
use tunnel_testkit::*;

const SECRET: &str = "pg-visitor-secret";
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_work_through_a_visitor() {
    let Some(bindir) = tunnel_testkit::postgres::server_bindir() else {
        skip("PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them");
        return;
    };
    let (Some(psql), Some(pgbench)) = (
        tunnel_testkit::postgres::client_program(&bindir, "psql"),
        tunnel_testkit::postgres::client_program(&bindir, "pgbench"),
    ) else {
        skip("psql or pgbench not found; .ci/run installs them");
        return;
    };
    let pg = match Postgres::start(bindir) {
        Ok(pg) => pg,
        Err(why) => {
            skip(&why.to_string());
            return;
        }
    };

    let server = server().await;
    let _owner = client(client_config(&server).with_id("pg-owner").with_proxy(
        ProxyConfig::tcp("pg", &format!("127.0.0.1:{}", pg.port), None).with_secret(SECRET),
    ))
    .await;
    let bind_port = free_port();
    let _app = client(client_config(&server).with_id("pg-app").with_visitor(
        VisitorConfig::new("pg", "pg", 0, &format!("127.0.0.1:{bind_port}")).with_secret(SECRET),
    ))
    .await;

    // Queries through the visitor; the port setting proves it is our throw-away server.
    let psql_args = [
        "-d",
        "postgres",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
    ];
    let sql = |q: &'static str| {
        let mut a = psql_args.to_vec();
        a.extend(["-c", q]);
        a
    };
    tunnel_testkit::postgres::run_client(
        &psql,
        bind_port,
        &sql("CREATE TABLE t (id int PRIMARY KEY, v text);
              INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;"),
    )
    .await;
    let summary = tunnel_testkit::postgres::run_client(
        &psql,
        bind_port,
        &sql("SELECT count(*), sum(id), current_setting('port') FROM t"),
    )
    .await;
    assert_eq!(summary.trim(), format!("20000|200010000|{}", pg.port));
    // About 660 KB of rows back through the tunnel, checked row by row.
    let rows = tunnel_testkit::postgres::run_client(
        &psql,
        bind_port,
        &sql("SELECT id, v FROM t ORDER BY id"),
    )
    .await;
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), 20000);
    assert_eq!(rows[0], "1|c4ca4238a0b923820dcc509a6f75849b"); // md5("1")
    assert!(rows.iter().enumerate().all(|(i, r)| {
        r.split_once('|')
            .is_some_and(|(id, v)| id == (i + 1).to_string() && v.len() == 32)
    }));

    tunnel_testkit::postgres::run_client(&pgbench, bind_port, &["-i", "-s", "1", "-q", "postgres"])
        .await;
    let bench = tunnel_testkit::postgres::run_client(
        &pgbench,
        bind_port,
        &["-c", "4", "-j", "2", "-t", "50", "postgres"],
    )
    .await;
    assert!(
        bench.contains("number of transactions actually processed: 200/200"),
        "pgbench did not complete every transaction:\n{bench}"
    );
    let accounts = tunnel_testkit::postgres::run_client(
        &psql,
        bind_port,
        &sql("SELECT count(*) FROM pgbench_accounts"),
    )
    .await;
    assert_eq!(accounts.trim(), "100000");
    drop(pg);
}
