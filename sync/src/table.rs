//! `describe`: the table's description (`DescribeTable`), read by
//! provisioning and by the stream follower (which finds the stream there).

use aws_sdk_dynamodb::Client;

use crate::error::{classify, DynamoError, ErrorKind};

/// `DescribeTable` of `table`, its description required.
pub(crate) async fn describe(
    client: &Client,
    table: &str,
    op: &'static str,
) -> Result<aws_sdk_dynamodb::types::TableDescription, DynamoError> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|err| classify(op, &err))?;
    out.table
        .ok_or_else(|| DynamoError::new(op, ErrorKind::Malformed, "no table description"))
}
