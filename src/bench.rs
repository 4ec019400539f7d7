pub async fn run(_url: Option<&str>, _args: crate::cli::BenchArgs) -> crate::error::Result<()> { Err(crate::error::Error::Config("bench: not implemented yet".into())) }
