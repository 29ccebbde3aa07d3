fn main() -> anyhow::Result<()> {
    switchboard_dataplane::cli::Cli::parse_and_run()
}
