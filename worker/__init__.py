"""The delivery worker: fan-out, signing, HTTP delivery, retries, dead letters, scheduling."""
