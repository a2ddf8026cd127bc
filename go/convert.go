package dialpool

import (
	"bytes"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// dialect is the database behind a pool: it decides how arguments are
// written as text and how result text is read back.
type dialect int

const (
	postgres dialect = iota
	mysql
)

func dialectOf(url string) dialect {
	u := strings.ToLower(url)
	if strings.HasPrefix(u, "mysql://") || strings.HasPrefix(u, "mariadb://") {
		return mysql
	}
	return postgres
}

// encodeStatement writes the SQL and every argument as NUL-terminated text
// into one buffer (what dpg_query takes) and the arguments' offsets into
// offs (-1 for NULL).
func encodeStatement(d dialect, query string, args []driver.NamedValue) ([]byte, []int64, error) {
	return appendStatement(nil, nil, d, query, args)
}

// appendStatement is encodeStatement into buf[:0] and offs[:0], so that a
// connection can reuse its buffers.
func appendStatement(buf []byte, offs []int64, d dialect, query string, args []driver.NamedValue) ([]byte, []int64, error) {
	if strings.IndexByte(query, 0) >= 0 {
		return nil, nil, &Error{Code: CodeInvalidArgument, Message: "the SQL text contains a NUL byte", Elapsed: -1}
	}
	size := len(query) + 1
	for _, a := range args {
		size += 24
		switch v := a.Value.(type) {
		case string:
			size += len(v)
		case []byte:
			size += 2 + 2*len(v)
		}
	}
	if cap(buf) < size {
		buf = make([]byte, 0, size)
	}
	buf = append(buf[:0], query...)
	buf = append(buf, 0)
	if cap(offs) < len(args) {
		offs = make([]int64, len(args))
	}
	offs = offs[:len(args)]
	for i, a := range args {
		if a.Name != "" {
			return nil, nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("named argument %q: dialpool takes positional arguments only ($1 or ?)", a.Name), Elapsed: -1}
		}
		if a.Value == nil {
			offs[i] = -1
			continue
		}
		offs[i] = int64(len(buf))
		start := len(buf)
		var err error
		buf, err = appendArg(buf, d, a.Value)
		if err != nil {
			return nil, nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("argument %d: %v", a.Ordinal, err), Elapsed: -1}
		}
		if bytes.IndexByte(buf[start:], 0) >= 0 {
			return nil, nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("argument %d contains a NUL byte, which text parameters cannot carry", a.Ordinal), Elapsed: -1}
		}
		buf = append(buf, 0)
	}
	return buf, offs, nil
}

// appendArg writes one argument as the text the server parses. time.Time
// keeps its offset for PostgreSQL (timestamptz gets the instant, timestamp
// the wall clock, as pgx does) and becomes UTC wall-clock time for MySQL
// (as go-sql-driver/mysql with its default loc=UTC). []byte is bytea hex
// for PostgreSQL (as lib/pq); MySQL takes it as it is.
func appendArg(buf []byte, d dialect, v driver.Value) ([]byte, error) {
	switch v := v.(type) {
	case int64:
		return strconv.AppendInt(buf, v, 10), nil
	case uint64:
		return strconv.AppendUint(buf, v, 10), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if d == mysql {
				return nil, fmt.Errorf("MySQL has no %v", v)
			}
			switch {
			case math.IsNaN(v):
				return append(buf, "NaN"...), nil
			case v > 0:
				return append(buf, "Infinity"...), nil
			default:
				return append(buf, "-Infinity"...), nil
			}
		}
		return strconv.AppendFloat(buf, v, 'g', -1, 64), nil
	case bool:
		if d == mysql {
			if v {
				return append(buf, '1'), nil
			}
			return append(buf, '0'), nil
		}
		return strconv.AppendBool(buf, v), nil
	case string:
		return append(buf, v...), nil
	case []byte:
		if d == mysql {
			return append(buf, v...), nil
		}
		buf = append(buf, '\\', 'x')
		return hex.AppendEncode(buf, v), nil
	case time.Time:
		if d == mysql {
			return v.UTC().AppendFormat(buf, "2006-01-02 15:04:05.999999"), nil
		}
		return v.AppendFormat(buf, "2006-01-02 15:04:05.999999999Z07:00"), nil
	default:
		return nil, fmt.Errorf("unsupported type %T", v)
	}
}

// PostgreSQL type OIDs the driver reads into Go types.
const (
	oidBool        = 16
	oidBytea       = 17
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidOID         = 26
	oidFloat4      = 700
	oidFloat8      = 701
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
)

// MySQL column type codes the driver reads into Go types.
const (
	myTiny      = 1
	myShort     = 2
	myLong      = 3
	myFloat     = 4
	myDouble    = 5
	myTimestamp = 7
	myLongLong  = 8
	myInt24     = 9
	myDate      = 10
	myDatetime  = 12
	myYear      = 13
	myNewDate   = 14
	myBit       = 16
	myTinyBlob  = 249
	myMedBlob   = 250
	myLongBlob  = 251
	myBlob      = 252
)

// kind is what Go type a column's text becomes.
type kind uint8

const (
	kBytes kind = iota // []byte: type unknown, or binary
	kString
	kInt
	kFloat
	kBool
	kTime      // with an offset in the text
	kTimeNoTZ  // wall clock, read as UTC
	kDate      // date only, midnight UTC
	kByteaHex  // PostgreSQL bytea in hex output
	kMaybeUint // MySQL integer that may be an unsigned 64-bit value
)

func kindOf(d dialect, t uint32, known bool) kind {
	if !known {
		return kBytes
	}
	if d == mysql {
		switch t {
		case myTiny, myShort, myLong, myInt24, myYear:
			return kInt
		case myLongLong:
			return kMaybeUint
		case myFloat, myDouble:
			return kFloat
		case myTimestamp, myDatetime:
			return kTimeNoTZ
		case myDate, myNewDate:
			return kDate
		case myBit, myTinyBlob, myMedBlob, myLongBlob, myBlob:
			// TEXT columns share the BLOB codes; []byte scans into string too.
			return kBytes
		default:
			return kString
		}
	}
	switch t {
	case oidInt2, oidInt4, oidInt8, oidOID:
		return kInt
	case oidFloat4, oidFloat8:
		return kFloat
	case oidBool:
		return kBool
	case oidTimestamptz:
		return kTime
	case oidTimestamp:
		return kTimeNoTZ
	case oidDate:
		return kDate
	case oidBytea:
		return kByteaHex
	default:
		return kString
	}
}

// typeName is the database type name for ColumnTypeDatabaseTypeName.
func typeName(d dialect, t uint32, known bool) string {
	if !known {
		return ""
	}
	if d == mysql {
		switch t {
		case 0, 246:
			return "DECIMAL"
		case myTiny:
			return "TINYINT"
		case myShort:
			return "SMALLINT"
		case myLong:
			return "INT"
		case myFloat:
			return "FLOAT"
		case myDouble:
			return "DOUBLE"
		case 6:
			return "NULL"
		case myTimestamp:
			return "TIMESTAMP"
		case myLongLong:
			return "BIGINT"
		case myInt24:
			return "MEDIUMINT"
		case myDate, myNewDate:
			return "DATE"
		case 11:
			return "TIME"
		case myDatetime:
			return "DATETIME"
		case myYear:
			return "YEAR"
		case 15, 253:
			return "VARCHAR"
		case myBit:
			return "BIT"
		case 245:
			return "JSON"
		case 247:
			return "ENUM"
		case 248:
			return "SET"
		case myTinyBlob, myMedBlob, myLongBlob, myBlob:
			return "BLOB"
		case 254:
			return "CHAR"
		case 255:
			return "GEOMETRY"
		}
		return strconv.FormatUint(uint64(t), 10)
	}
	switch t {
	case oidBool:
		return "BOOL"
	case oidBytea:
		return "BYTEA"
	case oidInt8:
		return "INT8"
	case oidInt2:
		return "INT2"
	case oidInt4:
		return "INT4"
	case 25:
		return "TEXT"
	case oidOID:
		return "OID"
	case 114:
		return "JSON"
	case oidFloat4:
		return "FLOAT4"
	case oidFloat8:
		return "FLOAT8"
	case 1042:
		return "BPCHAR"
	case 1043:
		return "VARCHAR"
	case oidDate:
		return "DATE"
	case 1083:
		return "TIME"
	case oidTimestamp:
		return "TIMESTAMP"
	case oidTimestamptz:
		return "TIMESTAMPTZ"
	case 1186:
		return "INTERVAL"
	case 1700:
		return "NUMERIC"
	case 2950:
		return "UUID"
	case 3802:
		return "JSONB"
	}
	return strconv.FormatUint(uint64(t), 10)
}

// decode turns a value's text into the Go value of its column's kind. A
// text the kind cannot parse (PostgreSQL's 'infinity', a BC date, MySQL's
// zero date) comes back as []byte rather than failing the whole row.
func decode(k kind, b []byte) driver.Value {
	s := unsafe.String(unsafe.SliceData(b), len(b)) // only parsed, never kept
	switch k {
	case kString:
		return string(b)
	case kInt:
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			return v
		}
	case kMaybeUint:
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			return v
		}
		return string(b) // above MaxInt64: scans into uint64 from a string
	case kFloat:
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			return v
		}
	case kBool:
		switch s {
		case "t", "1", "true":
			return true
		case "f", "0", "false":
			return false
		}
	case kTime:
		for _, layout := range [...]string{"2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00:00"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t
			}
		}
	case kTimeNoTZ:
		if t, err := time.Parse("2006-01-02 15:04:05.999999999", s); err == nil {
			return t
		}
		if s == "0000-00-00 00:00:00" || strings.HasPrefix(s, "0000-00-00 00:00:00.") {
			return time.Time{}
		}
	case kDate:
		if t, err := time.Parse("2006-01-02", s); err == nil {
			return t
		}
		if s == "0000-00-00" {
			return time.Time{}
		}
	case kByteaHex:
		if len(b) >= 2 && b[0] == '\\' && b[1] == 'x' {
			out := make([]byte, hex.DecodedLen(len(b)-2))
			if _, err := hex.Decode(out, b[2:]); err == nil {
				return out
			}
		}
	}
	return b
}
