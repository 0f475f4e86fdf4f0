/* SPDX-License-Identifier: Apache-2.0 */
/* mcugw v2 test vectors (docs/protocol.md), produced by scripts/gen-vectors.py --print. */
#define MV_HS1                                                                                     \
        "02010000ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3a"                         \
        "fa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e15253"                         \
        "e39987f11bde390bfbb8e19c747c116a047c135c8cfc945f293dd3126ef5dc6b"                         \
        "22f97bcb8ac62c15764cfecc029c3c16215ccf282999"
#define MV_HS1_WIRE                                                                                \
        "0302010177ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e"                         \
        "3afa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e152"                         \
        "53e39987f11bde390bfbb8e19c747c116a047c135c8cfc945f293dd3126ef5dc"                         \
        "6b22f97bcb8ac62c15764cfecc029c3c16215ccf282999d82152bf00"
#define MV_HS2                                                                                     \
        "0202000095ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1"                         \
        "448088431c14957d37fb52a6ff519af78430c7b603b009bc5e2f8945"
#define MV_DATA_PING                                                                               \
        "020300007856341200000000000000004020bf7da14cd082f03de20a5074a25b"                         \
        "51c7fa2a6f"
#define MV_DATA_TELEMETRY                                                                          \
        "0203000078563412010000000000000029a98fde5fef1baf3cff84a14f5a9c1a"                         \
        "c4f203c63d5b18703a8c2510f8"
#define MV_DATA_ACK                                                                                \
        "02030000785634120000000000000000752241cbeaf6142ebfe5ad9c4a77b9ba"                         \
        "10e09e5be8e12e394f"
