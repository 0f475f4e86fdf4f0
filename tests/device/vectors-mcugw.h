/* SPDX-License-Identifier: Apache-2.0 */
/* mcugw v1 test vectors (docs/protocol.md), produced by scripts/gen-vectors.py --print. */
#define MV_HS1                                                                                     \
        "01010000ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3a"                         \
        "fa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e15253"                         \
        "e39987f114ffa2d1b5a6f1c04ec6677810b159c58ffc945f293dd3126ef5dc6b"                         \
        "22f97bcb8ac6e4f82b26cfc52d26d9af3cb8cd301de0"
#define MV_HS1_WIRE                                                                                \
        "0301010177ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e"                         \
        "3afa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e152"                         \
        "53e39987f114ffa2d1b5a6f1c04ec6677810b159c58ffc945f293dd3126ef5dc"                         \
        "6b22f97bcb8ac6e4f82b26cfc52d26d9af3cb8cd301de01102a58e00"
#define MV_HS2                                                                                     \
        "0102000095ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1"                         \
        "448088431f14957d37fb52a694f34d6adc4a21de28c3e8cc77db78e5"
#define MV_DATA_PING                                                                               \
        "010300007856341200000000000000004020bf7da1fcc432b6bfb3ce5c908cca"                         \
        "5a3f368aa0"
#define MV_DATA_TELEMETRY                                                                          \
        "0103000078563412010000000000000029a98fde5fef1baf3cff84a14f80c21e"                         \
        "844c5a2f04023d3b08b3216153"
#define MV_DATA_ACK                                                                                \
        "01030000785634120000000000000000752241cbeaf6142ebf3af01a0f27cda9"                         \
        "02ca06350525dd4f73"
