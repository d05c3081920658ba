//! `cargo run --release -p damper-lab [--scenario FILE]... [--seed N] [--out DIR] [--quick]`

use damper_lab::Options;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: damper-lab [--scenario FILE]... [--seed N] [--out DIR] [--quick]

  --scenario FILE  run this scenario file (repeatable; default: the built-in catalog)
  --seed N         seed for every random draw (default 1); same seed, same report.json
  --out DIR        where report.json, the SVG charts and index.html go (default target/damper-lab)
  --quick          compress every timeline 4x, for smoke tests";

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--scenario" => opts.scenarios.push(PathBuf::from(value("--scenario")?)),
            "--seed" => {
                let v = value("--seed")?;
                opts.seed = v
                    .parse()
                    .map_err(|_| format!("--seed: `{v}` is not a non-negative integer"))?;
            }
            "--out" => opts.out = PathBuf::from(value("--out")?),
            "--quick" => opts.quick = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("damper-lab: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let report = match damper_lab::run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("damper-lab: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Err(e) = report.write(&opts.out) {
        eprintln!("damper-lab: writing {}: {e}", opts.out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "\nwrote {}/report.json, {} charts and index.html",
        opts.out.display(),
        report.scenarios.len()
    );
    ExitCode::SUCCESS
}
