var axios = require('axios');
var FormData = require('form-data');
var data = new FormData();
data.append('username', 'xxxxxx');
data.append('password', 'xxxxxx');

var config = {
  method: 'post',
  url: 'https://sms.tinsight.tech/auth2/get_token_auth/',
  data : data
};

axios(config)
.then(function (response) {
  console.log(JSON.stringify(response.data));
})
.catch(function (error) {
  console.log(error);
});
