//! The `mmtrace` program: command line, runtime, exit codes. The stages
//! live in the `tracer` library (see its lib.rs).

use clap::Parser;

use tracer::{
    cli::{Cli, Command},
    commands::{record, report, stream},
    daemon::control::{self, SortKey},
    error::Error,
    session::signals,
};

fn main() {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.format(|buf, record| {
        use std::io::Write;
        // Records of the kernel programs (aya-log) keep their eBPF target.
        let from = if record.target().starts_with("tracer_ebpf") {
            "kernel: "
        } else {
            ""
        };
        writeln!(buf, "mmtrace: {from}{}", record.args())
    });
    if tracer::kernel::kernel_log_wanted() {
        logger.filter_module("tracer_ebpf", log::LevelFilter::Debug);
    }
    logger.init();
    let cli = Cli::parse();
    if let Err(e) = signals::block() {
        eprintln!("mmtrace: cannot block SIGINT/SIGTERM: {e}");
        std::process::exit(1);
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmtrace: {}", error_line(&e));
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// One line: the error and its causes.
fn error_line(e: &Error) -> String {
    match e {
        Error::Other(e) => format!("{e:#}"),
        e => e.to_string(),
    }
}

fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Stream(mut args) if args.connect.is_some() => {
            let socket = args.connect.take().unwrap_or_default();
            tracer::daemon::live::client(args, &socket)
        }
        Command::Stream(args) => {
            // Forking the command happens before the runtime starts threads.
            let prepared = stream::prepare(args)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)?;
            rt.block_on(stream::run(prepared))
        }
        Command::Record(args) => {
            let prepared = record::prepare(args)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)?;
            rt.block_on(record::run(prepared))
        }
        Command::Daemon(args) => {
            let config = tracer::daemon::config::Config::load(&args.config)
                .map_err(|e| Error::Usage(format!("configuration refused: {e}")))?;
            if args.check_config {
                use std::io::Write;
                // A closed pipe (`| head`) is not an error of the check.
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "{}: valid\n{config:#?}",
                    args.config.display()
                );
                return Ok(0);
            }
            tracer::daemon::run(&args.config, config)
        }
        Command::Status(args) => {
            control::status(&args.socket, args.json, &mut std::io::stdout().lock())
        }
        Command::Ps(args) => {
            use tracer::cli::PsSort;
            let sort = match args.sort {
                PsSort::Rss => SortKey::Rss,
                PsSort::Mapped => SortKey::Mapped,
                PsSort::Regions => SortKey::Regions,
                PsSort::Faults => SortKey::Faults,
                PsSort::Pid => SortKey::Pid,
            };
            control::ps(&args.socket, sort, args.json, &mut std::io::stdout().lock())
        }
        Command::Dump(args) => control::dump(&args.socket, args.pid, &args.output),
        Command::Report(args) => {
            let opts = report::ReportOptions {
                short_lived_ns: args.short_lived_ms * 1_000_000,
                top: usize::try_from(args.top).unwrap_or(usize::MAX),
                max_size: args.max_size,
            };
            if let Some(html) = &args.html {
                return report_html(&args.file, html, &opts);
            }
            let mut out = std::io::stdout().lock();
            report::run(&args.file, &opts, &mut out).map_err(|e| Error::Usage(e.to_string()))?;
            Ok(0)
        }
        Command::Export(args) => {
            let tracer::cli::ExportFormat::Perfetto = args.to;
            let stats = tracer::output::perfetto::export_file(
                &args.file,
                &args.output,
                tracer::output::file::Access::default(),
            )?;
            eprintln!(
                "{}",
                tracer::output::perfetto::summary(&args.output, &stats)
            );
            Ok(0)
        }
    }
}

/// `mmtrace report FILE --html OUT`: the page, private, never over an
/// existing file, and what it left out said on stderr.
fn report_html(
    file: &std::path::Path,
    html: &std::path::Path,
    opts: &report::ReportOptions,
) -> Result<i32, Error> {
    use std::os::unix::ffi::OsStrExt;
    let shown = |p: &std::path::Path| tracer::output::names::escape_text(p.as_os_str().as_bytes());
    if html.symlink_metadata().is_ok() {
        return Err(Error::Usage(format!(
            "{}: already exists (mmtrace never overwrites a report)",
            shown(html)
        )));
    }
    let mut out =
        tracer::output::file::Replace::create(html, tracer::output::file::Access::default())?;
    let mut buffered = std::io::BufWriter::new(out.file());
    let stats = report::html(file, opts, &mut buffered).map_err(|e| Error::Usage(e.to_string()))?;
    buffered
        .into_inner()
        .map_err(|e| anyhow::Error::from(e.into_error()))?;
    out.commit().map_err(anyhow::Error::from)?;
    eprintln!(
        "mmtrace: wrote {}: {} processes, {} regions",
        shown(html),
        stats.processes,
        stats.regions
    );
    if stats.regions_left_out > 0 {
        eprintln!(
            "mmtrace: WARNING: {} regions are not drawn: the page holds at most {} (the first born)",
            stats.regions_left_out,
            tracer::output::html::MAX_REGIONS
        );
    }
    if stats.changes_left_out > 0 {
        eprintln!(
            "mmtrace: {} region changes are not listed (at most {} a region, {} in all); \
             their extents are drawn as one",
            stats.changes_left_out,
            tracer::output::html::MAX_CHANGES_PER_REGION,
            tracer::output::html::MAX_CHANGES
        );
    }
    if stats.samples_thinned > 0 {
        eprintln!(
            "mmtrace: the memory curves of {} processes are thinned to at most {} samples",
            stats.samples_thinned,
            tracer::output::html::MAX_SAMPLES
        );
    }
    Ok(0)
}
