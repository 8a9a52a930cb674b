//! A raw link client for tests that speak to a node's port as an outsider would: the raw
//! frame codec and a link request with chosen handshake metadata.

use bytes::Bytes;

/// Frames as they are, for a raw gRPC client of the link method.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Sets the link handshake metadata of `request`.
pub fn handshake<T>(
    request: &mut tonic::Request<T>,
    protocol: u32,
    cluster: &str,
    from: &str,
    to: &str,
) {
    use tonic::metadata::MetadataValue;
    let md = request.metadata_mut();
    md.insert("actormesh-protocol", MetadataValue::from(protocol));
    md.insert_bin(
        "actormesh-cluster-bin",
        MetadataValue::from_bytes(cluster.as_bytes()),
    );
    md.insert_bin(
        "actormesh-from-bin",
        MetadataValue::from_bytes(from.as_bytes()),
    );
    md.insert_bin("actormesh-to-bin", MetadataValue::from_bytes(to.as_bytes()));
}

/// A link request with the handshake metadata and no frames; returns the node's answer.
pub async fn link_request(
    channel: tonic::transport::Channel,
    protocol: u32,
    cluster: &str,
    from: &str,
    to: &str,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(tokio_stream::iter(Vec::<Bytes>::new()));
    handshake(&mut request, protocol, cluster, from, to);
    grpc.streaming(
        request,
        http::uri::PathAndQuery::from_static("/actormesh.Mesh/Link"),
        RawBytes,
    )
    .await
    .map(|_| ())
}
