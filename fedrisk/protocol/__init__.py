"""What crosses a holder boundary: message codecs per topology, private set intersection, encryption."""
