"""What the tests, the demo and the benchmarks share: throwaway PostgreSQL databases, an offline
crawl against the emulator, profiling. Not part of the installed package."""
