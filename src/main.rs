fn main() -> std::process::ExitCode {
    refunds_gateway::cli::main()
}
