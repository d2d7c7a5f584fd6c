"""Real servers on loopback for tests and the embedded mode: moto's DynamoDB server, DynamoDB Local,
embedded PostgreSQL. Nothing here is a mock: every client talks HTTP or the PostgreSQL protocol."""
