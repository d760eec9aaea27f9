"""vkscraper: collect posts and comments of VK communities into a database."""

__version__ = "0.1.0"
