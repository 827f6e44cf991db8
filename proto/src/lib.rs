//! Darter's wire protocol (prost messages and tonic services).

pub mod common {
    pub mod v1 {
        tonic::include_proto!("darter.common.v1");
    }
}

/// Agent <-> scheduler.
pub mod scheduler {
    // Register is the first message of a stream only; boxing it buys nothing.
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        tonic::include_proto!("darter.scheduler.v1");
    }
}

/// Agent <-> agent piece transfer.
pub mod peer {
    pub mod v1 {
        tonic::include_proto!("darter.peer.v1");
    }
}

/// Operator -> agent command stream.
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("darter.agent.v1");
    }
}

#[cfg(test)]
mod tests {
    use super::common::v1::{Piece, TaskInfo, TaskState};
    use prost::Message;

    #[test]
    fn messages_round_trip() {
        let info = TaskInfo {
            id: "ab".repeat(32),
            state: TaskState::Succeeded as i32,
            content_length: Some(10),
            piece_length: 4,
            pieces: vec![0, 1, 2],
            ..Default::default()
        };
        let bytes = info.encode_to_vec();
        assert_eq!(TaskInfo::decode(bytes.as_slice()).unwrap(), info);
        let p = Piece {
            number: 1,
            offset: 4,
            length: 4,
            crc32c: 7,
        };
        assert_eq!(Piece::decode(p.encode_to_vec().as_slice()).unwrap(), p);
    }
}
