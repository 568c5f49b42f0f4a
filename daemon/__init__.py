"""The gossipchat node: libp2p host, rooms, images, store and sync."""

__version__ = "0.1.0"
