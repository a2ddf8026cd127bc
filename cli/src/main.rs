//! The `dialpool` command: `demo` shows what each layer reports for real
//! failures against throwaway servers; `doctor` examines one database URL.

use std::process::ExitCode;

mod contrast;
mod demo;
mod doctor;

const USAGE: &str = "usage:
  dialpool demo [--json]         throwaway servers, real faults, what each layer reports
  dialpool doctor URL [--json]   connect step by step, compare client and server limits
  dialpool version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => demo::run(args.iter().any(|a| a == "--json")),
        Some("doctor") => {
            let json = args.iter().any(|a| a == "--json");
            match args.iter().skip(1).find(|a| !a.starts_with("--")) {
                Some(url) => ExitCode::from(doctor::run(url, json)),
                None => {
                    eprintln!("{USAGE}");
                    ExitCode::from(2)
                }
            }
        }
        Some("version") | Some("--version") => {
            println!("dialpool {}", dialpool::VERSION);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
