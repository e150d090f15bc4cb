// `codec` given twice: an error, not "the last wins".
#[uds::service(codec = "json", codec = "proto")]
pub trait Svc {
    async fn get(&self) -> u32;
}

fn main() {}
