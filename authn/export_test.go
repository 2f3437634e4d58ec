package authn

import "os/user"

var userT = user.User{Uid: "1234", Gid: "1234", Username: "joe", HomeDir: "/home/joe"}
