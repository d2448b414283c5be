"""The shared base: errors, options, Kafka connection settings. Imports nothing of the project above it."""
