package streamframe

// SPDYDictionary is SPDY/3's zlib dictionary for header blocks (SPDY Protocol Draft 3, section 2.6.10.1), byte for
// byte as github.com/moby/spdystream/spdy holds it (unexported there; BSD licence of the Go Authors). Every SPDY/3
// peer compresses its header blocks with it; TestSPDYHeadersSpdystreamInterop (package gateway) checks that warren inflates what
// spdystream's framer writes.
const SPDYDictionary = "\x00\x00\x00\aoptions\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00" +
	"\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\raccep" +
	"t-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\rauthorization\x00\x00\x00\rcache-control\x00\x00\x00\nco" +
	"nnection\x00\x00\x00\fcontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language" +
	"\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\vcontent-md5\x00\x00\x00\rcontent" +
	"-range\x00\x00\x00\fcontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\aexpires\x00\x00\x00\x04f" +
	"rom\x00\x00\x00\x04host\x00\x00\x00\bif-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\rif-none-match\x00\x00\x00" +
	"\bif-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\rlast-modified\x00\x00\x00\blocation\x00\x00\x00" +
	"\fmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authoriza" +
	"tion\x00\x00\x00\x05range\x00\x00\x00\areferer\x00\x00\x00\vretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\atrail" +
	"er\x00\x00\x00\x11transfer-encoding\x00\x00\x00\aupgrade\x00\x00\x00\nuser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00" +
	"\x00\x00\awarning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200" +
	" OK\x00\x00\x00\aversion\x00\x00\x00\bHTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\nset-cookie\x00\x00\x00\nkee" +
	"p-alive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540" +
	"6407408409410411412413414415416417502504505203 Non-Authoritative" +
	" Information204 No Content301 Moved Permanently400 Bad Request40" +
	"1 Unauthorized403 Forbidden404 Not Found500 Internal Server Erro" +
	"r501 Not Implemented503 Service UnavailableJan Feb Mar Apr May J" +
	"un Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sa" +
	"t, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,appli" +
	"cation/xml,application/xhtml+xml,text/plain,text/javascript,publ" +
	"icprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-" +
	"1,utf-,*,enq=0."
