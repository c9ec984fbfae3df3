//! Timed downloads, the same way for the appliance and for the Linux peer
//! (`bench.rs`, `peer.rs`): rates in MB/s of fetches after one untimed one.

/// MB/s of `n` fetches of `path` through `fetch` (>= 1), sorted, and the
/// size of the last (`fetch_rates_while`).
pub fn fetch_rates(
    fetch: impl Fn(u16, &str) -> std::result::Result<(usize, f64), String>,
    port: u16,
    path: &str,
    n: usize,
) -> std::result::Result<(Vec<f64>, usize), String> {
    fetch_rates_while(fetch, port, path, |timed| Ok(timed < n))
}

/// MB/s of fetches of `path` through `fetch`, timed one after another while
/// `more(fetches timed so far)` says so, sorted, and the size of the last.
/// One fetch before them is not timed, on either guest: the first fetch of
/// a path has the emulator translate the code that serves it (the
/// appliance's first `/trace.ctf.tar` fetch ran at 28-31 MB/s and the next
/// ones at 42-53).
pub fn fetch_rates_while(
    fetch: impl Fn(u16, &str) -> std::result::Result<(usize, f64), String>,
    port: u16,
    path: &str,
    mut more: impl FnMut(usize) -> std::result::Result<bool, String>,
) -> std::result::Result<(Vec<f64>, usize), String> {
    fetch(port, path)?;
    let (mut rates, mut size) = (Vec::new(), 0);
    while more(rates.len())? {
        let (b, s) = fetch(port, path)?;
        rates.push(b as f64 / s / 1e6);
        size = b;
    }
    rates.sort_by(f64::total_cmp);
    Ok((rates, size))
}
