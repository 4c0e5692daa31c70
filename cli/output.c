/* output: placeholder, being written */
