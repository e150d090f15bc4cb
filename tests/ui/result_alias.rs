// A `Result` alias as the result: its errors would arrive as a success.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MyError;

pub type MyResult = Result<u32, MyError>;

#[uds::service]
pub trait Svc {
    async fn get(&self) -> MyResult;
}

fn main() {}
