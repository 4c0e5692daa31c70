/* method-auth: placeholder, being written */
