//! curl as a browser-like client.

/// Run curl with `args`; returns (exit ok, stdout, stderr).
pub async fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl's body as text, asserting success.
pub async fn curl_ok(args: &[&str]) -> String {
    let (ok, out, err) = curl(args).await;
    assert!(ok, "curl {args:?} failed: {err}");
    String::from_utf8_lossy(&out).into_owned()
}
