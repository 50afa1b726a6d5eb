//! `demo-backend --name NAME --listen ADDR`: one demo upstream for the quickstart.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "A demo HTTP backend (HTTP/1.1 and h2c)")]
struct Args {
    /// Name echoed in every answer.
    #[arg(long)]
    name: String,
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backend = wasmesh_demo_backend::Backend::start(&args.name, args.listen).await?;
    eprintln!("demo-backend {} listening on {}", backend.name, backend.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
