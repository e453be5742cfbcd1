fn main() {
    ledgerflow_worker::cli::main()
}
