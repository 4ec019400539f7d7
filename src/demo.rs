pub async fn run(_url: Option<&str>, _schema: Option<&str>, _args: crate::cli::DemoArgs) -> crate::error::Result<()> { Err(crate::error::Error::Config("demo: not implemented yet".into())) }
