// `Box<dyn Error>` cannot be sent: say what to use instead.
#[uds::service]
pub trait Svc {
    async fn get(&self) -> Result<u32, Box<dyn std::error::Error + Send + Sync>>;
}

fn main() {}
