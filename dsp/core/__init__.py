"""The contract every block and the server share: requests, features, parameters, windows, state, errors."""
