"""Tools over finished datasets: pictures, the terminal preview, a row rendered again."""
